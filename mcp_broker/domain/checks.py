"""Checks on what callers send, and the limits behind them: one source for each limit.

The MCP layer builds its parameter constraints from these constants, and the messages here name
them, so a limit is never written twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence

from ..errors import InvalidArgument, InvalidCursor, excerpt
from ..models import Priority
from ..text import check_display_text

SESSION_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SESSION_NAME_RE = re.compile(SESSION_NAME_PATTERN)
# Session ids are UUIDs; a name may never look like one, so a reference is never ambiguous.
SESSION_ID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
SHORT_TEXT_RE = re.compile(r"^[^\x00-\x1f]{1,64}$")

MAX_WAIT_SECONDS = 60.0  # receive's long-poll, request's and await_reply's wait
# A waiting call sleeps until a ring or the next lease it knows of ends; this recheck is only the net
# under a lost ring (and leases nobody here knew of), so an idle process costs nothing between them.
RECHECK_SECONDS = 5.0
RETRY_BUSY_SECONDS = 0.05  # a waiting receive whose lease found the store locked tries again this soon
MAX_MESSAGES = 100  # per receive
MAX_IDS = 100  # message ids in one call
MAX_LEASE_SECONDS = 3600.0
DEFAULT_LEASE_SECONDS = 60.0
MAX_DELAY_SECONDS = 3600.0
MAX_TTL_SECONDS = 30 * 86400.0
MAX_PAGE = 100  # discover_protocols and list_dead_letters
MAX_REF = 64  # a session name or id
MAX_TAG_TEXT = 128  # correlation_id, reply_to, idempotency_key
MAX_PROTOCOLS_PER_SESSION = 64
MAX_SHORT_TEXTS = 64  # features, tags
MAX_SESSION_METADATA_BYTES = 16 * 1024
MAX_SESSION_METADATA_DEPTH = 8
MAX_ADAPTER_STEPS = 64


def is_session_id(ref: str) -> bool:
    return bool(SESSION_ID_RE.fullmatch(ref))


def check_session_name(name: str) -> str:
    if not isinstance(name, str) or not SESSION_NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"session name {str(name)[:40]!r} is not valid: use 1-64 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    if is_session_id(name):
        raise InvalidArgument(
            f"session name {name!r} has the shape of a session id; pick a name that does not look like a UUID"
        )
    return name


def check_ref(ref: str) -> None:
    if not isinstance(ref, str) or not 0 < len(ref) <= MAX_REF:
        raise InvalidArgument(f"a session is named by its name or its session_id (1-{MAX_REF} characters)")


def check_short_texts(values: Sequence[str], what: str, limit: int = MAX_SHORT_TEXTS) -> list[str]:
    if len(values) > limit:
        raise InvalidArgument(f"at most {limit} {what} are allowed, got {len(values)}")
    for value in values:
        if not isinstance(value, str) or not SHORT_TEXT_RE.fullmatch(value):
            raise InvalidArgument(
                f"{what} must be 1-64 printable characters each; {excerpt(value, 40)} is not"
            )
        check_display_text(value, what, 64)  # other agents and people read these: no hidden characters
    return list(dict.fromkeys(values))


def check_message_ids(message_ids: Sequence[str]) -> list[str]:
    ids = list(dict.fromkeys(message_ids))
    if not 1 <= len(ids) <= MAX_IDS:
        raise InvalidArgument(f"give between 1 and {MAX_IDS} message_ids")
    for message_id in ids:
        if not isinstance(message_id, str) or not 0 < len(message_id) <= 64:
            raise InvalidArgument("each message_id is a message id string as returned by send or receive")
    return ids


def number(value: float) -> str:
    """A limit as people write it: 2592000, not 2.592e+06."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def check_range(value: float, low: float, high: float, what: str, hint: str = "") -> None:
    if not low <= value <= high:  # NaN fails too
        raise InvalidArgument(f"{what} must be between {number(low)} and {number(high)}{hint}")


def check_wait(seconds: float, what: str) -> None:
    check_range(seconds, 0, MAX_WAIT_SECONDS, what, "; call again to wait longer")


def priority_rank(name: str) -> int:
    try:
        return Priority(name).rank
    except ValueError:
        raise InvalidArgument("priority must be low, normal or high") from None


def expiry(now: float, ttl_seconds: float | None) -> float | None:
    if ttl_seconds is None:
        return None
    check_range(ttl_seconds, 1, MAX_TTL_SECONDS, "ttl_seconds", " (30 days)")
    return now + ttl_seconds


def optional_text(value: str | None, what: str, limit: int = MAX_TAG_TEXT) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= limit or "\x00" in value:
        raise InvalidArgument(f"{what} must be 1-{limit} characters without NUL")
    return value


def encode_cursor(offset: int, filters: str) -> str:
    digest = hashlib.sha256(filters.encode()).hexdigest()[:16]
    return base64.urlsafe_b64encode(json.dumps([offset, digest]).encode()).decode()


def decode_cursor(cursor: str, filters: str) -> int:
    """The offset in a cursor ``encode_cursor`` issued for the same filters."""
    try:
        offset, digest = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        valid = (
            isinstance(offset, int)
            and not isinstance(offset, bool)
            and 0 <= offset < 2**31
            and digest == hashlib.sha256(filters.encode()).hexdigest()[:16]
        )
    except (ValueError, TypeError) as exc:
        raise InvalidCursor("the cursor is not one this broker issued; start again without cursor") from exc
    if not valid:
        raise InvalidCursor("the cursor belongs to another query; repeat the same filters or drop the cursor")
    return int(offset)
