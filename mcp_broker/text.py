"""Text that other agents and people read: names, features, tags, descriptions.

A string one agent stores is shown to another agent's model, or to a person in a listing. Characters
that do not show as themselves can make it mislead: a right-to-left override that reverses what follows,
a zero-width joiner that makes two names look equal, a newline that forges another line of a listing,
Unicode "tag" characters that carry invisible instructions to a model. ``check_display_text`` refuses
them where a value is accepted; ``neutralise`` shows them as visible escapes where text is only previewed.
"""

from __future__ import annotations

import unicodedata

from mcp_broker.errors import InvalidArgument

# Unicode categories that never show as a glyph of their own: controls (Cc), format characters (Cf: the
# bidi embeddings, overrides and isolates U+202A-U+202E and U+2066-U+2069, the marks U+200E/U+200F, the
# zero-width U+200B-U+200D, U+2060, U+FEFF, the tags U+E0000-U+E007F), lone surrogates (Cs), and the line
# and paragraph separators (Zl, Zp) that break a line like a newline does.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Letters (Lo) that render as blank space: fillers, often used to fake an empty or equal-looking name.
_BLANK_LETTERS = frozenset({"\u115f", "\u1160", "\u3164", "\uffa0"})
_LINE_BREAKS = frozenset({"\n"})


def hidden(char: str) -> bool:
    """Whether ``char`` does not show as itself (control, format, bidi, zero-width, separator, filler)."""
    return char in _BLANK_LETTERS or unicodedata.category(char) in _HIDDEN_CATEGORIES


def _name(char: str) -> str:
    return f"U+{ord(char):04X}" + (f" ({unicodedata.name(char)})" if unicodedata.name(char, "") else "")


def check_display_text(value: object, what: str, max_len: int, *, multiline: bool = False) -> str:
    """``value`` if it is a string of at most ``max_len`` characters that shows as what it is.

    Refuses (``InvalidArgument``) any character :func:`hidden` finds, naming it and its position;
    with ``multiline``, a newline is allowed (a description may have paragraphs; a name may not).
    """
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string, not {type(value).__name__}")
    if len(value) > max_len:
        raise InvalidArgument(f"{what} is {len(value)} characters long; at most {max_len} are allowed")
    allowed = _LINE_BREAKS if multiline else frozenset()
    for index, char in enumerate(value):
        if char not in allowed and hidden(char):
            raise InvalidArgument(
                f"{what} contains {_name(char)} at index {index}; control, format (bidi, zero-width) and "
                "line-separator characters are not allowed in text other agents read"
            )
    return value


def _escape(char: str) -> str:
    code = ord(char)
    if char in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def neutralise(text: str, max_len: int) -> str:
    """A one-line preview of ``text`` in at most ``max_len`` characters, hidden characters made visible.

    Each character :func:`hidden` finds becomes its escape (``\\u202e``, ``\\n``); a cut text ends with
    "…", and an escape is never cut in half.
    """
    max_len = max(max_len, 1)
    pieces: list[str] = []
    used = 0
    for char in text:
        piece = _escape(char) if hidden(char) else char
        if used + len(piece) > max_len:
            while pieces and used > max_len - 1:  # room for the "…"
                used -= len(pieces.pop())
            return "".join(pieces) + "…"
        pieces.append(piece)
        used += len(piece)
    return "".join(pieces)
