"""Unit tests for protocol names, versions, ranges and choosing a common version."""

from __future__ import annotations

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from mcp_broker.errors import InvalidArgument, InvalidVersion
from mcp_broker.versions import (
    PROTOCOL_NAME_RE,
    VersionRange,
    check_protocol_name,
    highest_common,
    parse_range,
    parse_version,
    sort_versions_desc,
    version_key,
)

# --- protocol names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["chat", "code_review", "a1", "v2_chat_9", "a" * 64])
def test_valid_protocol_names(name: str) -> None:
    assert check_protocol_name(name) == name
    assert PROTOCOL_NAME_RE.fullmatch(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a",  # the pattern needs a first and a last character
        "Chat",
        "CHAT",
        "chat_",
        "_chat",
        "1chat",
        "chat-room",
        "chat room",
        "chat.v1",
        "chat\n",
        "chat\x00",
        "chät",
        "ｃhat",
        "chat'; DROP TABLE protocols; --",
        "' OR '1'='1",
        "chat%",
    ],
)
def test_invalid_protocol_names(name: str) -> None:
    with pytest.raises(InvalidArgument, match="lowercase letters, digits and underscores") as info:
        check_protocol_name(name)
    assert str(info.value).startswith("INVALID_ARGUMENT: ")


def test_protocol_name_too_long() -> None:
    with pytest.raises(InvalidArgument, match="65 characters long; at most 64"):
        check_protocol_name("a" * 65)


def test_protocol_name_error_message_is_short_for_huge_input() -> None:
    with pytest.raises(InvalidArgument) as info:
        check_protocol_name("a" * 100_000)
    assert len(str(info.value)) < 200


def test_protocol_name_must_be_a_string() -> None:
    with pytest.raises(InvalidArgument, match="must be a string, not int"):
        check_protocol_name(42)  # type: ignore[arg-type]


# --- versions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["0.0.0", "1.0.0", "1.2.3", "10.20.30", "999999999.0.1"])
def test_parse_valid_versions(text: str) -> None:
    assert parse_version(text) == Version(text)
    assert str(parse_version(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "1.2",
        "1.2.3.4",
        "01.2.3",
        "1.02.3",
        "1.2.03",
        "1.2.3-rc1",
        "1.2.3rc1",
        "1.2.3+build",
        "v1.2.3",
        " 1.2.3",
        "1.2.3 ",
        "1.2.3\n",
        "1.2.3\x00",
        "１.0.0",
        "1.٢.3",
        "1..3",
        "-1.2.3",
        "1.2.x",
        "1000000000.0.0",  # ten digits: more than we let a part have
        "9" * 10_000 + ".0.0",
    ],
)
def test_parse_invalid_versions(text: str) -> None:
    with pytest.raises(InvalidVersion, match=r"is not a version; use MAJOR\.MINOR\.PATCH such as 1\.0\.0"):
        parse_version(text)


def test_invalid_version_message() -> None:
    with pytest.raises(InvalidVersion) as info:
        parse_version("1.2")
    assert str(info.value) == "INVALID_VERSION: '1.2' is not a version; use MAJOR.MINOR.PATCH such as 1.0.0"


def test_invalid_version_message_is_short_for_huge_input() -> None:
    with pytest.raises(InvalidVersion) as info:
        parse_version("1" * 100_000)
    assert len(str(info.value)) < 200


def test_parse_version_rejects_non_strings() -> None:
    with pytest.raises(InvalidVersion, match="is not a version"):
        parse_version(None)  # type: ignore[arg-type]


def test_ordering_is_numeric_not_lexical() -> None:
    assert version_key("1.10.0") > version_key("1.9.0")
    assert version_key("2.0.0") > version_key("1.99.99")
    assert version_key("0.10.0") > version_key("0.9.9")


def test_sort_versions_desc() -> None:
    versions = ["1.9.0", "1.10.0", "0.1.0", "2.0.0", "1.9.10", "1.9.2"]
    assert sort_versions_desc(versions) == ["2.0.0", "1.10.0", "1.9.10", "1.9.2", "1.9.0", "0.1.0"]
    assert sorted(versions, key=version_key) == list(reversed(sort_versions_desc(versions)))


def test_sort_versions_desc_accepts_any_iterable_and_empty() -> None:
    assert sort_versions_desc(iter(["1.0.0", "1.0.1"])) == ["1.0.1", "1.0.0"]
    assert sort_versions_desc([]) == []


def test_sort_versions_desc_rejects_invalid() -> None:
    with pytest.raises(InvalidVersion):
        sort_versions_desc(["1.0.0", "1.0"])


# --- ranges -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("^1.2", ">=1.2.0,<2.0.0"),
        ("^1.2.3", ">=1.2.3,<2.0.0"),
        ("^1", ">=1.0.0,<2.0.0"),
        ("^0", ">=0.0.0,<1.0.0"),
        ("^0.3", ">=0.3.0,<0.4.0"),
        ("^0.3.1", ">=0.3.1,<0.4.0"),
        ("^0.0", ">=0.0.0,<0.1.0"),
        ("^0.0.3", ">=0.0.3,<0.0.4"),
        ("~1.2", ">=1.2.0,<1.3.0"),
        ("~1.2.3", ">=1.2.3,<1.3.0"),
        ("~1", ">=1.0.0,<2.0.0"),
        ("~0.2", ">=0.2.0,<0.3.0"),
        ("1.2.3", "==1.2.3"),
        (" ^ 1.2 ", ">=1.2.0,<2.0.0"),
        ("^1.2, !=1.3.0", ">=1.2.0,<2.0.0,!=1.3.0"),
    ],
)
def test_shorthands_expand_to_pep440(text: str, expected: str) -> None:
    parsed = parse_range(text)
    assert parsed.specifiers == SpecifierSet(expected)
    assert str(parsed) == text


@pytest.mark.parametrize("text", [">=1.0,<2", "==1.2.*", "!=1.3.0", "~=1.2", ">= 1.0 , < 2", "<=3.0.0"])
def test_pep440_ranges_pass_through(text: str) -> None:
    parsed = parse_range(text)
    assert parsed.specifiers == SpecifierSet(text)
    assert str(parsed) == text
    assert parsed.text == text


@pytest.mark.parametrize("text", ["", "*", "  ", " * "])
def test_any_version(text: str) -> None:
    parsed = parse_range(text)
    assert parsed.specifiers == SpecifierSet()
    for version in ["0.0.0", "1.2.3", "999.0.0"]:
        assert parsed.contains(version)


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        (">=1.0,<2", ["1.0.0", "1.9.9", "1.10.0"], ["0.9.9", "2.0.0"]),
        ("==1.2.*", ["1.2.0", "1.2.99"], ["1.3.0", "1.1.9"]),
        ("!=1.3.0", ["1.2.0", "1.3.1"], ["1.3.0"]),
        ("^1.2", ["1.2.0", "1.99.0"], ["1.1.9", "2.0.0"]),
        ("^0.3", ["0.3.0", "0.3.9"], ["0.2.9", "0.4.0"]),
        ("^0.0.3", ["0.0.3"], ["0.0.2", "0.0.4"]),
        ("~1.2", ["1.2.0", "1.2.9"], ["1.3.0", "1.1.0"]),
        ("~1", ["1.0.0", "1.9.0"], ["2.0.0", "0.9.0"]),
        ("1.2.3", ["1.2.3"], ["1.2.4", "1.2.2"]),
        ("~=1.2", ["1.2.0", "1.9.0"], ["2.0.0", "1.1.0"]),
    ],
)
def test_contains(text: str, inside: list[str], outside: list[str]) -> None:
    parsed = parse_range(text)
    for version in inside:
        assert parsed.contains(version), version
        assert parsed.contains(Version(version)), version
    for version in outside:
        assert not parsed.contains(version), version


def test_contains_rejects_invalid_version_strings() -> None:
    with pytest.raises(InvalidVersion):
        parse_range(">=1.0").contains("1.2")


def test_version_range_is_frozen_and_hashable() -> None:
    parsed = parse_range("^1.2")
    with pytest.raises(AttributeError):
        parsed.text = "*"  # type: ignore[misc]
    assert parsed == parse_range("^1.2")
    assert hash(parsed) == hash(parse_range("^1.2"))
    assert isinstance(parsed, VersionRange)


@pytest.mark.parametrize(
    "text",
    [
        ">=abc",
        "^",
        "~",
        "~x",
        "^x.y",
        "^1.2.3.4",
        "^01.2",
        "^-1",
        "~1.2.3-rc1",
        "1.2",
        "01.2.3",
        "1.2.3-rc1",
        "1.x",
        ">=1.0,,<2",
        ">=1.0,",
        ",",
        "**",
        "latest",
        "===1.0.0",
        ">=1.0\x00",
        "\x00",
        ">=1.0\n",
        ">=1.0\t",
        ">=１.0.0",
        "１.0.0",
        "^１.2",
        "^1.2 || ^2.0",
        "'; DROP TABLE sessions; --",
        "^1000000000",
    ],
)
def test_invalid_ranges(text: str) -> None:
    with pytest.raises(InvalidVersion) as info:
        parse_range(text)
    assert str(info.value).startswith("INVALID_VERSION: ")
    assert len(str(info.value)) < 400


def test_garbage_range_message_gives_examples() -> None:
    with pytest.raises(
        InvalidVersion, match=r"'>=abc' is not a version range; use a PEP 440 specifier such as"
    ):
        parse_range(">=abc")


def test_bare_partial_version_suggests_a_series() -> None:
    with pytest.raises(InvalidVersion, match=r"write '~1\.2' or '==1\.2\.\*'"):
        parse_range("1.2")


def test_caret_without_version_says_what_is_missing() -> None:
    with pytest.raises(InvalidVersion, match=r"take MAJOR\[\.MINOR\[\.PATCH\]\] such as '\^1\.2'"):
        parse_range("^")


def test_range_length_limit() -> None:
    long_but_fine = ",".join(["!=1.0.0"] * 25)  # 199 characters
    assert len(long_but_fine) <= 200
    parse_range(long_but_fine)
    with pytest.raises(InvalidVersion, match="at most 200"):
        parse_range(">=1.0.0," + "!=1.0.0," * 30)
    with pytest.raises(InvalidVersion, match="at most 200"):
        parse_range("9" * 1_000_000)


def test_parse_range_rejects_non_strings() -> None:
    with pytest.raises(InvalidVersion, match="must be a string, not list"):
        parse_range([">=1.0"])  # type: ignore[arg-type]


# --- highest_common ---------------------------------------------------------------------------


def test_highest_common_uses_semver_order() -> None:
    versions = ["1.9.0", "1.10.0", "1.2.0"]
    assert highest_common(versions, parse_range(">=1.0,<2")) == "1.10.0"


def test_highest_common_intersects_all_ranges() -> None:
    versions = ["1.0.0", "1.4.0", "1.5.2", "2.0.0", "2.1.0"]
    assert highest_common(versions, parse_range("^1.2"), parse_range("<1.5")) == "1.4.0"
    assert highest_common(versions, parse_range("*"), parse_range(">=2")) == "2.1.0"


def test_highest_common_without_ranges_is_the_highest() -> None:
    assert highest_common(["0.1.0", "0.10.0", "0.2.0"]) == "0.10.0"


def test_highest_common_no_match() -> None:
    assert highest_common(["1.0.0", "1.1.0"], parse_range("^1.0"), parse_range(">=2")) is None
    assert highest_common(["1.0.0"], parse_range("~2")) is None
    assert highest_common([], parse_range("*")) is None


def test_highest_common_accepts_generators_and_rejects_invalid() -> None:
    assert highest_common((v for v in ["1.0.0", "1.0.1"]), parse_range("1.0.0")) == "1.0.0"
    with pytest.raises(InvalidVersion):
        highest_common(["1.0"], parse_range("*"))
