"""Protocol names, semantic versions and version ranges, and choosing a version both sides accept.

Versions are strict ``MAJOR.MINOR.PATCH`` and ordered with ``packaging.version.Version``, so
``1.10.0`` sorts above ``1.9.0``. Ranges are PEP 440 specifier sets (``>=1.0,<2``) plus the npm
shorthands agents tend to write (``^1.2``, ``~1.2``, a bare ``1.2.3``, ``*``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from mcp_broker.errors import InvalidArgument, InvalidVersion

PROTOCOL_NAME_PATTERN = r"^[a-z][a-z0-9_]*[a-z0-9]$"
PROTOCOL_NAME_RE = re.compile(PROTOCOL_NAME_PATTERN)
PROTOCOL_NAME_MAX = 64
VERSION_PATTERN = (
    r"^[0-9]+\.[0-9]+\.[0-9]+$"  # what a tool's input schema says; parse_version checks the rest
)
RANGE_MAX = 200

# Nine digits per part keeps every number a small int, so hostile input cannot make us build
# huge integers; explicit [0-9] because \d would also accept digits such as '１' (fullwidth).
_PART = r"(0|[1-9][0-9]{0,8})"
_SEMVER_RE = re.compile(rf"{_PART}\.{_PART}\.{_PART}")
# ``^`` and ``~`` take one to three parts; ``~=`` is PEP 440's own operator and must not match here.
_SHORTHAND_RE = re.compile(rf"([\^~])(?!=)\s*{_PART}(?:\.{_PART}(?:\.{_PART})?)?")
# Anything a specifier set can legitimately contain; rejects NUL, control and non-ASCII characters
# before packaging sees them, so error messages stay printable.
_RANGE_CHARS_RE = re.compile(r"[0-9A-Za-z.,*<>=!~^+\- ]*")

_RANGE_HELP = (
    "use a PEP 440 specifier such as '>=1.0,<2', '==1.2.*' or '!=1.3.0', "
    "a shorthand such as '^1.2' or '~1.2', a version such as '1.2.3', or '*' for any version"
)


def _show(text: str, limit: int = 40) -> str:
    """Quote user input for an error message, cut short so a huge input gives a short message."""
    shown = text if len(text) <= limit else text[:limit] + "..."
    return repr(shown)


def check_protocol_name(name: str) -> str:
    """Return ``name`` if it is a valid protocol name, else raise ``InvalidArgument`` saying the rule."""
    if not isinstance(name, str):
        raise InvalidArgument(f"protocol name must be a string, not {type(name).__name__}")
    if len(name) > PROTOCOL_NAME_MAX:
        raise InvalidArgument(
            f"protocol name {_show(name)} is {len(name)} characters long; at most {PROTOCOL_NAME_MAX} are allowed"
        )
    # fullmatch, because '$' alone would let a trailing newline through.
    if not PROTOCOL_NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"protocol name {_show(name)} is invalid; use lowercase letters, digits and underscores, "
            "at least 2 characters, starting with a letter and not ending with an underscore, such as 'code_review'"
        )
    return name


def parse_version(text: str) -> Version:
    """Parse a strict ``MAJOR.MINOR.PATCH`` version; anything else raises ``InvalidVersion``."""
    # PEP 440 alone would accept '1.2', 'v1.2.3' or '1.2.3rc1'; the contract is plain semver.
    if not isinstance(text, str) or not _SEMVER_RE.fullmatch(text):
        shown = _show(text) if isinstance(text, str) else repr(type(text).__name__)
        raise InvalidVersion(f"{shown} is not a version; use MAJOR.MINOR.PATCH such as 1.0.0")
    return _version(text)


# Versions and ranges are parsed on every send; the same few texts come back again and again,
# and both results are immutable, so they are parsed once per process.
_version = functools.lru_cache(maxsize=4096)(Version)


@dataclass(frozen=True)
class VersionRange:
    """The versions an agent accepts: the text it wrote and the PEP 440 specifiers it means."""

    text: str
    specifiers: SpecifierSet
    _answers: dict[str | Version, bool] = field(default_factory=dict, init=False, compare=False, repr=False)

    def contains(self, version: str | Version) -> bool:
        """True if ``version`` (a ``MAJOR.MINOR.PATCH`` string or a ``Version``) is in the range."""
        answer = self._answers.get(version)
        if answer is None:
            parsed = parse_version(version) if isinstance(version, str) else version
            # Strict semver has no prereleases; allowing them keeps packaging from second-guessing us.
            answer = self.specifiers.contains(parsed, prereleases=True)
            if len(self._answers) >= 256:
                self._answers.clear()
            self._answers[version] = answer
        return answer

    def __str__(self) -> str:
        return self.text


def _expand_shorthand(op: str, major: int, minor: int | None, patch: int | None) -> str:
    """Turn npm's ``^`` / ``~`` into a PEP 440 ``>=low,<high`` pair, following npm's rules."""
    low = f"{major}.{minor or 0}.{patch or 0}"
    if op == "~":
        # ~1 allows minor changes, ~1.2 and ~1.2.3 only patch changes.
        high = f"{major + 1}.0.0" if minor is None else f"{major}.{minor + 1}.0"
    elif major > 0 or minor is None:
        high = f"{major + 1}.0.0"
    elif minor > 0 or patch is None:
        # Below 1.0.0 the minor is the breaking part: ^0.3 stays within 0.3.x.
        high = f"0.{minor + 1}.0"
    else:
        high = f"0.0.{patch + 1}"
    return f">={low},<{high}"


def _translate_part(part: str, text: str) -> str:
    """Translate one comma-separated item of a range into PEP 440 syntax."""
    if not part:
        raise InvalidVersion(f"{_show(text)} has an empty item between commas; {_RANGE_HELP}")
    shorthand = _SHORTHAND_RE.fullmatch(part)
    if shorthand:
        op, major, minor, patch = shorthand.groups()
        return _expand_shorthand(
            op, int(major), None if minor is None else int(minor), None if patch is None else int(patch)
        )
    if part[0] in "^~" and not part.startswith("~="):
        raise InvalidVersion(
            f"{_show(text)} is not a version range; '^' and '~' take MAJOR[.MINOR[.PATCH]] such as '^1.2' or '~1.2.3'"
        )
    if part[0].isdigit():
        if _SEMVER_RE.fullmatch(part):
            return f"=={part}"
        # A bare '1.2' is ambiguous (exactly 1.2.0, or any 1.2.x?), so ask the caller to say which.
        raise InvalidVersion(
            f"{_show(text)} is not a version range; a bare version must be MAJOR.MINOR.PATCH, "
            f"and for a series write '~{part}' or '=={part}.*'"
        )
    if part.startswith("==="):
        # Arbitrary equality compares strings, not versions, so it would defeat semver ordering.
        raise InvalidVersion(f"{_show(text)} uses '===', which is not supported; {_RANGE_HELP}")
    return part


def parse_range(text: str) -> VersionRange:
    """Parse the versions an agent accepts; garbage raises ``InvalidVersion`` with examples."""
    if not isinstance(text, str):
        raise InvalidVersion(f"a version range must be a string, not {type(text).__name__}; {_RANGE_HELP}")
    return _parse_range(text)


@functools.lru_cache(maxsize=1024)
def _parse_range(text: str) -> VersionRange:
    if len(text) > RANGE_MAX:
        raise InvalidVersion(f"version range is {len(text)} characters long; at most {RANGE_MAX} are allowed")
    if not _RANGE_CHARS_RE.fullmatch(text):
        raise InvalidVersion(f"{_show(text)} contains characters a version range cannot have; {_RANGE_HELP}")
    stripped = text.strip()
    if stripped in ("", "*"):
        return VersionRange(text, SpecifierSet())
    pep440 = ",".join(_translate_part(part.strip(), text) for part in stripped.split(","))
    try:
        specifiers = SpecifierSet(pep440)
    except InvalidSpecifier as exc:
        raise InvalidVersion(f"{_show(text)} is not a version range; {_RANGE_HELP}") from exc
    return VersionRange(text, specifiers)


def version_key(version: str) -> Version:
    """Sort key that orders versions as semver does (``1.10.0`` after ``1.9.0``)."""
    return parse_version(version)


def sort_versions_desc(versions: Iterable[str]) -> list[str]:
    """The versions, newest first; raises ``InvalidVersion`` if one is not ``MAJOR.MINOR.PATCH``."""
    return sorted(versions, key=version_key, reverse=True)


def highest_common(versions: Iterable[str], *ranges: VersionRange) -> str | None:
    """The highest of ``versions`` that every range contains, or ``None`` if there is none."""
    for version in sort_versions_desc(versions):
        if all(r.contains(version) for r in ranges):
            return version
    return None
