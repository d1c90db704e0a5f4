"""Unit tests of the text others read (mcp_broker.text) and of bounded error texts (errors.excerpt)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_broker.errors import MAX_MESSAGE_CHARS, BrokerError, InvalidArgument, excerpt
from mcp_broker.text import check_display_text, hidden, neutralise

HIDDEN = [
    "\x00",
    "\x1b",  # ESC: terminal escape sequences
    "\t",
    "\r",
    "\x7f",
    "\x85",  # NEL, a C1 control
    *(chr(c) for c in range(0x202A, 0x202F)),  # bidi embeddings and overrides
    *(chr(c) for c in range(0x2066, 0x206A)),  # bidi isolates
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\ufeff",  # zero-width
    "\u200e",
    "\u200f",
    "\u061c",  # direction marks
    "\u00ad",  # soft hyphen
    "\U000e0041",  # a Unicode tag character: invisible text for a model
    "\u2028",
    "\u2029",  # line and paragraph separators
    "\u3164",  # Hangul filler: a blank that is a letter
]
VISIBLE = ["a", "é", "ß", "日本", "😀", "👩‍💻"[0], "-", "_", ".", " ", "Ω", "ا"]


@pytest.mark.parametrize("char", HIDDEN)
def test_hidden_characters_are_refused_by_name_and_position(char: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_display_text(f"ok{char}ay", "feature", 64)
    text = str(caught.value)
    assert text.startswith("INVALID_ARGUMENT: feature contains U+")
    assert f"U+{ord(char):04X}" in text and "at index 2" in text
    assert char not in text  # the refusal does not carry the character it refuses


@pytest.mark.parametrize("text", VISIBLE)
def test_visible_text_is_accepted(text: str) -> None:
    assert check_display_text(text, "tag", 64) == text


def test_a_newline_only_where_multiline_text_is_allowed() -> None:
    assert check_display_text("one\ntwo", "description", 64, multiline=True) == "one\ntwo"
    with pytest.raises(InvalidArgument, match="U\\+000A"):
        check_display_text("one\ntwo", "name", 64)
    with pytest.raises(InvalidArgument, match="U\\+202E"):
        check_display_text("one\n\u202etwo", "description", 64, multiline=True)


def test_length_and_type_are_checked() -> None:
    assert check_display_text("x" * 8, "tag", 8) == "x" * 8
    with pytest.raises(InvalidArgument, match="9 characters long; at most 8"):
        check_display_text("x" * 9, "tag", 8)
    with pytest.raises(InvalidArgument, match="must be a string, not int"):
        check_display_text(5, "tag", 8)


def test_neutralise_makes_hidden_characters_visible_on_one_line() -> None:
    assert neutralise("evil\u202etxt.exe", 80) == "evil\\u202etxt.exe"
    assert neutralise("a\nb\tc\x00", 80) == "a\\nb\\tc\\x00"
    assert neutralise("tag\U000e0041", 80) == "tag\\U000e0041"
    assert neutralise("plain text", 80) == "plain text"


def test_neutralise_truncates_without_cutting_an_escape() -> None:
    assert neutralise("abcdef", 6) == "abcdef"
    assert neutralise("abcdefg", 6) == "abcde…"
    assert neutralise("abcd\u202eefg", 8) == "abcd…"  # "\u202e" is six characters: it does not fit
    assert neutralise("x" * 1_000_000, 10) == "x" * 9 + "…"


@given(st.text(), st.integers(min_value=1, max_value=200))
def test_neutralise_output_is_short_single_line_and_visible(text: str, max_len: int) -> None:
    shown = neutralise(text, max_len)
    assert len(shown) <= max_len
    assert not any(hidden(char) for char in shown)


# --- bounded error texts -----------------------------------------------------------------------


def _deep(depth: int) -> list[Any]:
    root: list[Any] = []
    node = root
    for _ in range(depth):
        node.append([])
        node = node[0]
    return root


@pytest.mark.parametrize(
    "value",
    [
        "x" * 1_000_000,
        [{}] * 10_000,
        {"k" * 10_000: "v" * 10_000},
        _deep(100_000),
        10**5000,  # past Python's digit limit for str()
        "line\nbreak\r\u202e\x00",
        b"\xff" * 1000,
        object(),
    ],
    ids=["long-str", "wide-list", "long-key", "deep-list", "huge-int", "controls", "bytes", "object"],
)
def test_excerpt_is_short_and_one_line(value: Any) -> None:
    shown = excerpt(value)
    assert 0 < len(shown) <= 80
    assert "\n" not in shown and "\r" not in shown and "\u202e" not in shown


def test_excerpt_of_small_values_is_their_repr() -> None:
    assert excerpt("chat") == "'chat'"
    assert excerpt([1, None]) == "[1, None]"
    assert excerpt("x" * 100, limit=20) == "'xxxxxxx...xxxxxxxx'"  # both ends kept, the middle cut


def test_broker_error_messages_are_capped() -> None:
    error = InvalidArgument("y" * 100_000)
    assert len(error.message) == MAX_MESSAGE_CHARS and error.message.endswith("…")
    assert str(error).startswith("INVALID_ARGUMENT: yyy")
    assert BrokerError("short").message == "short"
