"""JSON Schema checks: size and depth limits, schema registration, bounded payload validation.

Everything here assumes hostile input: a schema or payload may be huge, nested 10,000 deep,
reference the network, or carry a regular expression that backtracks for hours. Each of those
is refused with a stable error instead of stalling or crashing the broker.

The JSON Schema engine itself (``validation.py``, over jsonschema) is imported at its first use:
importing jsonschema takes about 65 ms, which a process would otherwise spend before its first answer.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcp_broker.errors import InvalidArgument, TooLarge
from mcp_broker.lru import Lru

if TYPE_CHECKING:
    from jsonschema.protocols import Validator


@dataclass(frozen=True)
class Limits:
    """Configurable bounds on what a schema or payload may cost the broker."""

    max_payload_bytes: int = 262144  # serialized canonical JSON, UTF-8
    max_schema_bytes: int = 65536
    max_depth: int = 64  # nesting of objects and arrays
    max_validation_errors: int = 10  # errors reported per refused payload
    # The work one payload's validation may take: weighed keyword applications (schema_cost.counted;
    # ~1.5 s here), and a deadline in case a machine is much slower than that.
    max_validation_steps: int = 500_000
    validation_seconds: float = 2.0
    regex_timeout: float = 0.1  # seconds one `pattern` search may take
    regex_budget: float = 1.0  # seconds all searches of one payload validation may take together


MESSAGE_CHARS = 200  # a validation message quotes the instance, which may be 256 KiB


def canonical_json(value: Any) -> str:
    """Serialize ``value`` deterministically (sorted keys, no spaces, UTF-8 text); refuse non-JSON."""
    json_depth(value, sys.maxsize, string_keys=True)
    return _dumps(value)


def _dumps(value: Any) -> str:
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")  # a lone surrogate ("\ud800") parses but cannot be stored as text
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgument(f"not a JSON value: {exc}") from None
    return text


def json_depth(value: Any, limit: int, *, string_keys: bool = False) -> int:
    """Nesting depth of objects/arrays (a scalar is 0); stops as soon as it exceeds ``limit``.

    With ``string_keys``, an object key that is not a string raises ``InvalidArgument``: json.dumps
    would silently turn int/float/bool/None keys into strings, which is not the value we were given.
    """
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            if isinstance(item, dict):
                if string_keys and not all(isinstance(key, str) for key in item):
                    raise InvalidArgument("JSON object keys must be strings")
                stack.extend((child, depth) for child in item.values())
            else:
                stack.extend((child, depth) for child in item)
    return deepest


def check_json_value(value: Any, *, what: str, max_bytes: int, max_depth: int) -> str:
    """Check depth then size of ``value``; return its canonical JSON text."""
    # Depth first and without recursion: json.dumps itself would blow the stack on hostile nesting.
    if json_depth(value, max_depth, string_keys=True) > max_depth:
        raise TooLarge(f"{what} nesting depth exceeds {max_depth}; flatten the structure", limit=max_depth)
    text = _dumps(value)
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise TooLarge(
            f"{what} is {size} bytes serialized; the limit is {max_bytes}", size=size, limit=max_bytes
        )
    return text


def json_pointer(path: Any) -> str:
    """Render a path (keys and indexes) as a JSON Pointer; the root is ``/``."""
    return "/" + "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in path)


def shorten(message: str) -> str:
    """``message`` cut to ``MESSAGE_CHARS``: a validation message may quote a 256 KiB instance."""
    return message if len(message) <= MESSAGE_CHARS else message[: MESSAGE_CHARS - 1] + "…"


def check_schema(schema: dict[str, Any], limits: Limits) -> str:
    """Check a protocol schema before it is stored; return its canonical JSON text."""
    from mcp_broker import validation

    return validation.check_schema(schema, limits)


def compile_validator(schema_text: str) -> Validator:
    """A bounded validator for a schema that already passed :func:`check_schema`."""
    from mcp_broker import validation

    return validation.compile_validator(schema_text)


def validate_payload(validator: Validator, payload: Any, limits: Limits) -> None:
    """Raise ``PayloadInvalid`` listing (up to the limit) where and why ``payload`` fails the schema."""
    from mcp_broker import validation

    validation.validate_payload(validator, payload, limits)


class SchemaCache:
    """Compiled validators by (protocol, version), least recently used dropped past ``maxsize``.

    Registered protocols are immutable, so an entry never goes stale; the schema text is still
    compared on a hit so that two stores in one process (tests) cannot see each other's schemas.
    """

    def __init__(self, maxsize: int = 1024) -> None:
        self._entries: Lru[tuple[str, str], tuple[str, Validator]] = Lru(maxsize)

    def get(self, key: tuple[str, str], schema_text: str) -> Validator:
        """The validator for ``key``, compiled from ``schema_text`` on first use."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] == schema_text:
            return entry[1]
        validator = compile_validator(schema_text)
        self._entries.put(key, (schema_text, validator))
        return validator

    def __len__(self) -> int:
        return len(self._entries)
