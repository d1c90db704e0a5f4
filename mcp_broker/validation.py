"""The JSON Schema engine: bounded regular expressions and keywords, schema checks at registration,
and payload validation within a budget. Imported at first use (see ``schemas.py``)."""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Iterator
from contextvars import ContextVar
from itertools import islice
from typing import Any

import jsonschema
import referencing.jsonschema
import regex
from jsonschema import ValidationError, validators
from jsonschema.protocols import Validator
from referencing import Registry
from referencing.exceptions import Unresolvable

from mcp_broker import _jsonschema
from mcp_broker.errors import InvalidSchema, PayloadInvalid, TooLarge, excerpt
from mcp_broker.patterns import CostlyPattern, PatternCache
from mcp_broker.schema_cost import CostlySchema, OutOfBudget, check_cost, check_size, counted, work_budget
from mcp_broker.schemas import Limits, check_json_value, json_pointer
from mcp_broker.schemas import shorten as _short

# --- bounded regular expressions ---------------------------------------------------------------


class _PatternTooSlow(Exception):
    """Raised, not yielded: inside `not` or `anyOf` a yielded error could turn into an acceptance."""


# (seconds per search, time.monotonic() deadline of the whole validation): many searches that each
# stay just under the per-search timeout must not add up to minutes.
_BUDGET: ContextVar[tuple[float, float] | None] = ContextVar("mcp_broker_regex_budget", default=None)


class _PatternTooCostly(Exception):
    """A pattern of a schema stored before patterns were priced is over the limits: never compiled."""


_PATTERNS = PatternCache(max_total=100_000)


def _search(pattern: str, text: str) -> bool:
    """``regex.search`` bounded by the current validation's budget (the stdlib ``re`` cannot time out)."""
    per_search, deadline = _BUDGET.get() or (Limits.regex_timeout, time.monotonic() + Limits.regex_budget)
    timeout = max(0.0, min(per_search, deadline - time.monotonic()))
    try:
        compiled = _PATTERNS.get(pattern)
    except (CostlyPattern, regex.error):
        raise _PatternTooCostly(pattern) from None
    try:
        return compiled.search(text, timeout=timeout) is not None
    except TimeoutError:
        raise _PatternTooSlow(pattern) from None


def _pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(patrn, instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _pattern_properties(
    validator: Any, patterns: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for patrn, subschema in patterns.items():
        for key, value in instance.items():
            if _search(patrn, key):
                yield from validator.descend(value, subschema, path=key, schema_path=patrn)


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    # jsonschema compares unsortable items (objects) pairwise: minutes for a 256 KiB array of objects.
    if not (unique and validator.is_type(instance, "array")):
        return
    seen: dict[Any, int] = {}
    for index, item in enumerate(instance):
        first = seen.setdefault(_hashable(item), index)
        if first != index:
            yield ValidationError(f"array has non-unique elements (items {first} and {index} are equal)")
            return


def _hashable(value: Any) -> Any:
    """A hashable stand-in equal exactly when JSON Schema calls two values equal (1 == 1.0, true != 1)."""
    if isinstance(value, bool) or value is None:
        return ("const", value)
    if isinstance(value, dict):
        return ("object", frozenset((key, _hashable(item)) for key, item in value.items()))
    if isinstance(value, list | tuple):
        return ("array", tuple(_hashable(item) for item in value))
    return ("scalar", value)


_REPLACED = _jsonschema.bounded_keywords(
    search=_search, pattern=_pattern, pattern_properties=_pattern_properties, unique_items=_unique_items
)


@functools.cache
def _bounded(draft: Any) -> Any:
    """The draft's validator class with every regex-matching or quadratic keyword bounded, and counted."""
    # Every keyword counts its work too, so that no payload can make one validation run for long.
    replaced = {name: counted(_REPLACED.get(fn, fn), name) for name, fn in draft.VALIDATORS.items()}
    return validators.extend(draft, replaced)


# --- schemas -----------------------------------------------------------------------------------

_DRAFTS: dict[str, tuple[str, Any]] = {  # $schema without scheme and "#" (http/https both seen in the wild)
    "json-schema.org/draft/2020-12/schema": ("2020-12", jsonschema.Draft202012Validator),
    "json-schema.org/draft/2019-09/schema": ("2019-09", jsonschema.Draft201909Validator),
    "json-schema.org/draft-07/schema": ("draft-07", jsonschema.Draft7Validator),
    "json-schema.org/draft-06/schema": ("draft-06", jsonschema.Draft6Validator),
    "json-schema.org/draft-04/schema": ("draft-04", jsonschema.Draft4Validator),
}
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})  # values, not subschemas
_REMOTE = "only local $ref (#/...) are supported; the broker never fetches"
_NO_FETCH = Registry()  # explicit, so jsonschema never falls back to its remote-retrieving registry


def _draft_for(schema: dict[str, Any]) -> tuple[str, Any]:
    """(name, validator class) named by ``$schema``; Draft 2020-12 when absent."""
    uri = schema.get("$schema")
    if uri is None:
        return _DRAFTS["json-schema.org/draft/2020-12/schema"]
    key = uri.removeprefix("https://").removeprefix("http://").rstrip("#") if isinstance(uri, str) else ""
    if key not in _DRAFTS:
        supported = ", ".join(cls.ID_OF(cls.META_SCHEMA) for _, cls in _DRAFTS.values())
        raise InvalidSchema(f"unsupported $schema {uri!r}; supported drafts: {supported}")
    return _DRAFTS[key]


def _refuse(message: str, path: tuple[Any, ...]) -> InvalidSchema:
    where = json_pointer(path)
    return InvalidSchema(f"at {_short(where)}: {message}", path=where)


def _check_refs_and_patterns(schema: dict[str, Any], draft: Any) -> None:
    """Refuse references that lead outside this document (or nowhere) and uncompilable patterns.

    A reference to a resource embedded in the document under its own ``$id`` is local too.
    """
    spec = referencing.jsonschema.specification_with(draft.ID_OF(draft.META_SCHEMA))
    root = spec.create_resource(schema)
    registry = _NO_FETCH.with_resource(root.id() or "", root).crawl()
    stack: list[tuple[Any, tuple[Any, ...], Any]] = [(schema, (), registry.resolver(root.id() or ""))]
    while stack:  # iterative: depth is bounded already, but no walk here should depend on that
        node, path, resolver = stack.pop()
        if isinstance(node, list):
            stack.extend((item, (*path, index), resolver) for index, item in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        if path and ("$id" in node or "id" in node):
            # A nested $id moves the base "#/..." resolves against; an error means "id" was a property name.
            with contextlib.suppress(AttributeError, TypeError):
                resolver = resolver.in_subresource(spec.create_resource(node))
        for keyword in ("$ref", "$dynamicRef", "$recursiveRef"):
            ref = node.get(keyword)
            if not isinstance(ref, str):
                continue
            try:  # nothing is ever retrieved: _NO_FETCH holds only this document's resources
                resolver.lookup(ref)
            except Unresolvable:
                why = "points to nothing in this schema" if ref.startswith("#") else _REMOTE
                raise _refuse(f"{keyword} {ref!r}: {why}", (*path, keyword)) from None
        patterns: list[tuple[tuple[str, ...], str]] = []
        if isinstance(node.get("pattern"), str):
            patterns.append((("pattern",), node["pattern"]))
        if isinstance(node.get("patternProperties"), dict):
            patterns += [(("patternProperties", key), key) for key in node["patternProperties"]]
        for where, patrn in patterns:
            try:
                _PATTERNS.get(patrn)
            except CostlyPattern as exc:
                raise _refuse(
                    f"pattern {excerpt(patrn)} would cost too much to compile: {exc}", (*path, *where)
                ) from None
            except regex.error as exc:
                raise _refuse(
                    f"{excerpt(patrn)} is not a valid regular expression: {exc}", (*path, *where)
                ) from None
        stack.extend(
            (value, (*path, key), resolver) for key, value in node.items() if key not in _DATA_KEYWORDS
        )


def check_schema(schema: dict[str, Any], limits: Limits) -> str:
    """Check a protocol schema before it is stored; return its canonical JSON text."""
    text = check_json_value(
        schema, what="schema", max_bytes=limits.max_schema_bytes, max_depth=limits.max_depth
    )
    if not isinstance(schema, dict):
        raise InvalidSchema('the schema must be a JSON object, e.g. {"type": "object"}')
    name, draft = _draft_for(schema)
    try:
        check_size(schema)
    except CostlySchema as exc:
        raise InvalidSchema(str(exc)) from None
    try:
        # format_checker=None: the metaschema's "regex" format would compile patterns with the stdlib
        # `re`, whose syntax differs from the `regex` module that matches them; we compile those below.
        draft.check_schema(schema, format_checker=None)
    except jsonschema.SchemaError as exc:
        raise _refuse(
            f"not a valid JSON Schema {name}: {_short(exc.message)}", tuple(exc.absolute_path)
        ) from None
    except RecursionError:
        raise TooLarge(f"schema is nested too deeply to check (limit {limits.max_depth})") from None
    try:
        _check_refs_and_patterns(schema, draft)
        # A $ref cycle that consumes nothing ({"$ref": "#"}) recurses forever on any value; find it
        # now, not at every send. Cycles reached only through some payloads are caught in validate_payload.
        try:
            check_cost(schema, draft, limits.max_depth)
        except CostlySchema as exc:
            raise _refuse(str(exc), exc.path) from None
        validator = _bounded(draft)(schema, registry=_NO_FETCH)
        probes: tuple[Any, ...] = (None, {}, [])
        for probe in probes:
            try:
                with work_budget(limits.max_validation_steps, limits.validation_seconds):
                    for _ in islice(validator.iter_errors(probe), 100):
                        pass
            except (RecursionError, Unresolvable):
                raise InvalidSchema(
                    "the schema refers to itself in a cycle ($ref loop) that never ends"
                ) from None
            except OutOfBudget:
                raise InvalidSchema(
                    "validating even an empty payload against the schema costs too much"
                ) from None
    except (ValueError, OverflowError) as exc:  # e.g. an $id that is not a URI: urljoin raises
        raise InvalidSchema(
            f"the schema cannot be used: {_short(str(exc))}; check $id and $ref values"
        ) from None
    return text


def compile_validator(schema_text: str) -> Validator:
    """A bounded validator for a schema that already passed :func:`check_schema`."""
    schema = json.loads(schema_text)
    validator: Validator = _bounded(_draft_for(schema)[1])(schema, registry=_NO_FETCH)
    return validator


def _path_key(error: ValidationError) -> tuple[Any, ...]:
    # Indexes before keys, numerically: "/items/2" sorts before "/items/10".
    parts = tuple(
        (0, part, "") if isinstance(part, int) else (1, 0, str(part)) for part in error.absolute_path
    )
    return (parts, error.message)


def validate_payload(validator: Validator, payload: Any, limits: Limits) -> None:
    """Raise ``PayloadInvalid`` listing (up to the limit) where and why ``payload`` fails the schema."""
    cap = max(1, limits.max_validation_errors)
    token = _BUDGET.set((limits.regex_timeout, time.monotonic() + limits.regex_budget))
    try:
        with work_budget(limits.max_validation_steps, limits.validation_seconds):
            # cap + 1 tells "more" apart without walking every error of a 256 KiB array.
            found = list(islice(validator.iter_errors(payload), cap + 1))
    except OutOfBudget as exc:
        spent = (
            f"{limits.max_validation_steps} steps"
            if exc.args[0] == "steps"
            else f"{limits.validation_seconds:g} seconds"
        )
        message = (
            f"validating this payload against the schema took more than its budget ({spent}); the payload "
            "is refused: send a smaller payload, or use a version of the protocol with a simpler schema"
        )
        raise PayloadInvalid(message, errors=[{"path": "/", "message": message}], over_budget=True) from None
    except _PatternTooCostly as exc:
        message = (
            f"the schema's pattern {excerpt(exc.args[0])} is too costly to compile (it predates the limits on "
            "patterns); register a new version of the protocol with a simpler pattern"
        )
        raise PayloadInvalid(message, errors=[{"path": "/", "message": message}]) from None
    except _PatternTooSlow as exc:
        message = (
            f"a value took too long to match pattern {_short(repr(exc.args[0]))}; the payload is refused"
        )
        raise PayloadInvalid(message, errors=[{"path": "/", "message": message}], over_budget=True) from None
    except (RecursionError, Unresolvable):
        message = "the schema recursed without end on this payload ($ref cycle); the payload is refused"
        raise PayloadInvalid(message, errors=[{"path": "/", "message": message}]) from None
    except OverflowError:  # e.g. multipleOf divides as floats: a number beyond float range
        message = "a number in the payload is too large to check against the schema"
        raise PayloadInvalid(message, errors=[{"path": "/", "message": message}]) from None
    finally:
        _BUDGET.reset(token)
    if not found:
        return
    found.sort(key=_path_key)
    errors = [{"path": json_pointer(e.absolute_path), "message": _short(e.message)} for e in found[:cap]]
    text = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
    if len(found) > cap:
        text += f"; and more (only the first {cap} errors are reported)"
    raise PayloadInvalid(
        f"payload does not match the schema: {text}", errors=errors, truncated=len(found) > cap
    )
