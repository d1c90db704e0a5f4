"""Unit tests of JSON Schema checks: limits, registration-time schema checks, bounded validation."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import jsonschema
import pytest

from mcp_broker.errors import InvalidArgument, InvalidSchema, PayloadInvalid, TooLarge
from mcp_broker.patterns import CostlyPattern, PatternCache, PatternLimits, pattern_size
from mcp_broker.schema_cost import CostLimits
from mcp_broker.schemas import (
    Limits,
    SchemaCache,
    canonical_json,
    check_json_value,
    check_schema,
    compile_validator,
    json_depth,
    json_pointer,
    validate_payload,
)

LIMITS = Limits()
DRAFT_2020 = "https://json-schema.org/draft/2020-12/schema"
DRAFT_2019 = "https://json-schema.org/draft/2019-09/schema"
DRAFT_7 = "http://json-schema.org/draft-07/schema#"
DRAFT_6 = "http://json-schema.org/draft-06/schema#"
DRAFT_4 = "http://json-schema.org/draft-04/schema#"
SLOW = "^(a|a)+$"  # backtracks exponentially even in the `regex` module
SLOW_TEXT = "a" * 40 + "!"


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def validator_for(schema: dict[str, Any]) -> Any:
    return compile_validator(check_schema(schema, LIMITS))


def refusal_of(validator: Any, payload: Any, limits: Limits = LIMITS) -> PayloadInvalid:
    with pytest.raises(PayloadInvalid) as caught:
        validate_payload(validator, payload, limits)
    return caught.value


def refusal(schema: dict[str, Any], payload: Any, limits: Limits = LIMITS) -> PayloadInvalid:
    with pytest.raises(PayloadInvalid) as caught:
        validate_payload(validator_for(schema), payload, limits)
    return caught.value


# --- JSON values -------------------------------------------------------------------------------


def test_canonical_json_is_sorted_compact_and_keeps_unicode() -> None:
    assert canonical_json({"b": 1, "a": ["é", None, True]}) == '{"a":["é",null,true],"b":1}'


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), {"x": float("-inf")}, {1: "a"}, {None: 1}, {"a": {2: 3}}, {"s": {1, 2}}],
)
def test_canonical_json_refuses_what_is_not_json(value: Any) -> None:
    with pytest.raises(InvalidArgument):
        canonical_json(value)


def test_canonical_json_refuses_lone_surrogates() -> None:
    with pytest.raises(InvalidArgument):
        canonical_json({"text": "\ud800"})


def test_nul_in_strings_is_valid_json() -> None:
    text = check_json_value({"a\x00": "b\x00"}, what="payload", max_bytes=100, max_depth=4)
    assert json.loads(text) == {"a\x00": "b\x00"}


def test_json_depth_counts_containers_and_stops_early() -> None:
    assert json_depth(5, 10) == 0
    assert json_depth({}, 10) == 1
    assert json_depth({"a": [1, {"b": []}]}, 10) == 4
    assert json_depth(nested(100_000), 5) == 6


def test_check_json_value_returns_canonical_text() -> None:
    assert check_json_value({"b": 1, "a": 2}, what="payload", max_bytes=100, max_depth=2) == '{"a":2,"b":1}'


def test_payload_too_large_names_size_and_limit() -> None:
    with pytest.raises(TooLarge) as caught:
        check_json_value({"t": "x" * 300}, what="payload", max_bytes=256, max_depth=64)
    assert "payload is 308 bytes serialized; the limit is 256" in str(caught.value)
    assert caught.value.details == {"size": 308, "limit": 256}


def test_size_counts_utf8_bytes() -> None:
    check_json_value("é" * 10, what="payload", max_bytes=22, max_depth=1)  # 20 bytes + 2 quotes
    with pytest.raises(TooLarge):
        check_json_value("é" * 11, what="payload", max_bytes=22, max_depth=1)


def test_payload_nested_10000_deep_is_too_large_not_a_recursion_error() -> None:
    with pytest.raises(TooLarge, match="payload nesting depth exceeds 64"):
        check_json_value(nested(10_000), what="payload", max_bytes=10**6, max_depth=64)


def test_depth_at_the_limit_is_accepted() -> None:
    check_json_value(nested(64), what="payload", max_bytes=10**6, max_depth=64)


def test_nan_payload_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        check_json_value({"x": float("nan")}, what="payload", max_bytes=100, max_depth=4)


def test_json_pointer_escapes_and_renders_root_as_slash() -> None:
    assert json_pointer([]) == "/"
    assert json_pointer(["a/b", "c~d", 3]) == "/a~1b/c~0d/3"


# --- schemas -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "payload_ok", "payload_bad"),
    [
        ({"prefixItems": [{"type": "string"}], "items": False}, ["a"], ["a", 1]),
        ({"$schema": DRAFT_2020, "prefixItems": [{"type": "string"}]}, ["a"], [1]),
        ({"$schema": DRAFT_2019, "dependentRequired": {"a": ["b"]}}, {"a": 1, "b": 2}, {"a": 1}),
        ({"$schema": DRAFT_7, "if": {"type": "string"}, "then": {"minLength": 2}}, "ab", "a"),
        ({"$schema": DRAFT_6, "exclusiveMaximum": 5}, 4, 5),
        ({"$schema": DRAFT_4, "maximum": 5, "exclusiveMaximum": True}, 4, 5),
    ],
)
def test_valid_schema_in_each_draft_validates_payloads(
    schema: Any, payload_ok: Any, payload_bad: Any
) -> None:
    text = check_schema(schema, LIMITS)
    assert json.loads(text) == schema
    validator = compile_validator(text)
    validate_payload(validator, payload_ok, LIMITS)
    with pytest.raises(PayloadInvalid):
        validate_payload(validator, payload_bad, LIMITS)


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ({"type": "strin"}, "/type"),
        ({"$schema": DRAFT_2020, "properties": {"a": {"minLength": -1}}}, "/properties/a/minLength"),
        ({"$schema": DRAFT_2019, "required": "a"}, "/required"),
        ({"$schema": DRAFT_7, "required": []}, None),  # valid in 7: the control case
        ({"$schema": DRAFT_6, "exclusiveMaximum": True}, "/exclusiveMaximum"),
        ({"$schema": DRAFT_4, "exclusiveMaximum": 5}, "/exclusiveMaximum"),
        ({"$schema": DRAFT_4, "required": []}, "/required"),  # draft 4 needs at least one
    ],
)
def test_invalid_schema_in_each_draft_is_refused_with_its_path(schema: Any, path: str | None) -> None:
    if path is None:
        check_schema(schema, LIMITS)
        return
    with pytest.raises(InvalidSchema) as caught:
        check_schema(schema, LIMITS)
    assert caught.value.details["path"] == path
    assert f"at {path}:" in str(caught.value)


def test_schema_uri_with_https_or_without_hash_is_accepted() -> None:
    check_schema({"$schema": "https://json-schema.org/draft-07/schema", "type": "object"}, LIMITS)
    check_schema({"$schema": "http://json-schema.org/draft/2020-12/schema#", "type": "object"}, LIMITS)


@pytest.mark.parametrize("uri", ["http://json-schema.org/draft-03/schema#", "https://example.com/mine", 7])
def test_unknown_schema_uri_names_the_supported_ones(uri: Any) -> None:
    with pytest.raises(InvalidSchema, match=r"unsupported \$schema") as caught:
        check_schema({"$schema": uri}, LIMITS)
    assert DRAFT_2020 in str(caught.value) and DRAFT_4 in str(caught.value)


@pytest.mark.parametrize("schema", [True, [], "object", None])
def test_schema_must_be_an_object(schema: Any) -> None:
    with pytest.raises(InvalidSchema, match="must be a JSON object"):
        check_schema(schema, LIMITS)


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ({"$ref": "https://example.com/schema.json"}, "/$ref"),
        ({"properties": {"a": {"$ref": "other.json#/x"}}}, "/properties/a/$ref"),
        ({"$schema": DRAFT_7, "items": [{"$ref": "file:///etc/passwd"}]}, "/items/0/$ref"),
        ({"$dynamicRef": "https://example.com/meta#node"}, "/$dynamicRef"),
    ],
)
def test_remote_refs_are_refused(schema: Any, path: str) -> None:
    with pytest.raises(InvalidSchema, match=r"only local \$ref .* the broker never fetches") as caught:
        check_schema(schema, LIMITS)
    assert caught.value.details["path"] == path


def test_dangling_local_ref_is_refused() -> None:
    with pytest.raises(InvalidSchema, match="points to nothing"):
        check_schema({"$defs": {"a": {}}, "properties": {"x": {"$ref": "#/$defs/b"}}}, LIMITS)


def test_local_refs_anchors_and_embedded_resources_are_accepted() -> None:
    schema = {
        "$id": "https://example.com/root",
        "$defs": {
            "name": {"$anchor": "name", "type": "string"},
            "child": {
                "$id": "https://example.com/child",
                "$defs": {"n": {"type": "integer"}},
                "$ref": "#/$defs/n",
            },
        },
        "properties": {
            "a": {"$ref": "#name"},
            "b": {"$ref": "https://example.com/child"},
            "c": {"$ref": "#"},
        },
    }
    validator = validator_for(schema)
    validate_payload(validator, {"a": "x", "b": 1, "c": {"a": "y"}}, LIMITS)
    assert refusal(schema, {"b": "x"}).details["errors"] == [
        {"path": "/b", "message": "'x' is not of type 'integer'"}
    ]


def test_refs_and_patterns_inside_data_or_property_names_are_not_keywords() -> None:
    schema = {
        "enum": [{"$ref": "https://example.com/x", "pattern": "(("}],
        "properties": {"$ref": {"type": "string"}, "pattern": {"type": "string"}, "id": {"type": "integer"}},
    }
    check_schema(schema, LIMITS)
    check_schema({"$schema": DRAFT_4, "properties": {"id": {"type": "integer"}, "$ref": {}}}, LIMITS)


def test_ref_cycle_that_consumes_nothing_is_refused_at_registration() -> None:
    with pytest.raises(InvalidSchema, match="cycle"):
        check_schema({"$ref": "#"}, LIMITS)
    with pytest.raises(InvalidSchema, match="cycle"):
        check_schema({"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}, LIMITS)


def test_ref_cycle_reached_only_by_some_payloads_is_refused_at_registration() -> None:
    schema = {"properties": {"a": {"$ref": "#/properties/a"}}}
    with pytest.raises(InvalidSchema, match="cycle") as caught:
        check_schema(schema, LIMITS)
    assert caught.value.details["path"] == "/properties/a"
    # Stored before cycles were found statically: the payload is refused, the process not crashed.
    assert "recursed" in refusal_of(compile_validator(json.dumps(schema)), {"a": 1}).message


def test_recursive_schema_validates_nested_payloads() -> None:
    schema = {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}}
    payload: Any = {}
    for _ in range(30):
        payload = {"kids": [payload]}
    validate_payload(validator_for(schema), payload, LIMITS)


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ({"properties": {"a": {"pattern": "(unclosed"}}}, "/properties/a/pattern"),
        ({"patternProperties": {"[z-a]": {}}}, "/patternProperties/[z-a]"),
        ({"$schema": DRAFT_4, "patternProperties": {"*": {}}}, "/patternProperties/*"),
    ],
)
def test_bad_regex_is_refused(schema: Any, path: str) -> None:
    with pytest.raises(InvalidSchema, match="not a valid regular expression") as caught:
        check_schema(schema, LIMITS)
    assert caught.value.details["path"] == path


def test_patterns_use_the_regex_module_syntax() -> None:
    validator = validator_for({"type": "string", "pattern": "^\\p{L}+$"})
    validate_payload(validator, "héllo", LIMITS)
    with pytest.raises(PayloadInvalid):
        validate_payload(validator, "h3llo", LIMITS)


def test_schema_too_large() -> None:
    schema = {"description": "x" * 70_000}
    with pytest.raises(TooLarge, match=r"schema is \d+ bytes serialized; the limit is 65536"):
        check_schema(schema, LIMITS)


def test_schema_nested_10000_deep_is_too_large_not_a_recursion_error() -> None:
    schema: Any = {"type": "string"}
    for _ in range(10_000):
        schema = {"properties": {"a": schema}}
    with pytest.raises(TooLarge, match="schema nesting depth exceeds 64"):
        check_schema(schema, LIMITS)


def test_schema_near_the_depth_limit_is_checked() -> None:
    schema: Any = {"type": "string"}
    for _ in range(31):  # two levels per step: 63 deep
        schema = {"properties": {"a": schema}}
    check_schema(schema, LIMITS)


def test_format_is_an_annotation_not_an_assertion() -> None:
    validate_payload(validator_for({"type": "string", "format": "email"}), "not an email", LIMITS)


# --- payload validation ------------------------------------------------------------------------


def test_valid_payload_passes() -> None:
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    assert validate_payload(validator_for(schema), {"text": "hi"}, LIMITS) is None


def test_errors_are_capped_sorted_and_carry_pointer_paths() -> None:
    schema = {"type": "array", "items": {"type": "string"}}
    error = refusal(schema, list(range(100_000)))
    errors = error.details["errors"]
    assert len(errors) == 10
    assert [e["path"] for e in errors] == [f"/{i}" for i in range(10)]
    assert errors[0]["message"] == "0 is not of type 'string'"
    assert error.details["truncated"] is True
    assert "and more (only the first 10 errors are reported)" in error.message
    assert str(error).startswith("PAYLOAD_INVALID: payload does not match the schema: /0: 0 is not of type")


def test_few_errors_are_all_listed_in_path_order() -> None:
    schema = {
        "type": "object",
        "properties": {"b": {"type": "string"}, "a": {"type": "array", "items": {"type": "integer"}}},
        "required": ["c"],
    }
    error = refusal(schema, {"b": 1, "a": [0] * 2 + ["x"] * 9})
    paths = [e["path"] for e in error.details["errors"]]
    assert paths == ["/", "/a/2", "/a/3", "/a/4", "/a/5", "/a/6", "/a/7", "/a/8", "/a/9", "/a/10"]
    small = refusal(schema, {"b": 1, "c": 0})
    assert small.details == {
        "errors": [{"path": "/b", "message": "1 is not of type 'string'"}],
        "truncated": False,
    }


def test_cap_is_configurable_and_long_messages_are_cut() -> None:
    limits = Limits(max_validation_errors=1)
    error = refusal({"type": "string"}, {"k": "v" * 5000}, limits)
    (only,) = error.details["errors"]
    assert len(only["message"]) <= 200 and only["message"].endswith("…")
    assert error.details["truncated"] is False


def test_unique_items_is_linear_and_follows_json_equality() -> None:
    validator = validator_for({"uniqueItems": True})
    validate_payload(validator, [{"a": i} for i in range(20_000)], LIMITS)  # pairwise would take minutes
    validate_payload(validator, [True, 1, False, 0, None, "1"], LIMITS)
    for duplicated in ([1, 1.0], [{"a": 1, "b": 2}, {"b": 2, "a": 1}], [[1, [2]], [1, [2]]]):
        with pytest.raises(PayloadInvalid, match="non-unique elements"):
            validate_payload(validator, duplicated, LIMITS)


# --- bounded regular expressions ---------------------------------------------------------------


def test_catastrophic_pattern_from_the_textbook_finishes() -> None:
    refusal({"type": "string", "pattern": "^(a+)+$"}, "a" * 5000 + "b")


@pytest.mark.parametrize(
    ("schema", "payload"),
    [
        ({"properties": {"s": {"pattern": SLOW}}}, {"s": SLOW_TEXT}),
        ({"properties": {"s": {"not": {"pattern": SLOW}}}}, {"s": SLOW_TEXT}),  # a timeout is no "mismatch"
        ({"anyOf": [{"pattern": SLOW}, {"type": "number"}]}, SLOW_TEXT),
        ({"items": {"pattern": SLOW}}, [SLOW_TEXT] * 1000),
        ({"patternProperties": {SLOW: {"type": "string"}}}, {SLOW_TEXT: 1}),
        ({"patternProperties": {SLOW: {}}, "additionalProperties": False}, {SLOW_TEXT: 1}),
        ({"patternProperties": {SLOW: {}}, "unevaluatedProperties": False}, {SLOW_TEXT: 1}),
        (
            {"$schema": DRAFT_2019, "patternProperties": {SLOW: {}}, "unevaluatedProperties": False},
            {SLOW_TEXT: 1},
        ),
        (
            {"$schema": DRAFT_4, "patternProperties": {SLOW: {}}, "additionalProperties": False},
            {SLOW_TEXT: 1},
        ),
        ({"propertyNames": {"pattern": SLOW}}, {SLOW_TEXT: 1}),
    ],
)
def test_pattern_that_backtracks_for_ever_refuses_the_payload(schema: Any, payload: Any) -> None:
    error = refusal(schema, payload)
    assert "took too long to match pattern" in error.message
    assert error.details["errors"][0]["path"] == "/"


def test_regex_budget_bounds_the_whole_validation() -> None:
    # With no budget left even an instant pattern is refused: many near-timeout searches cannot add up.
    limits = Limits(regex_budget=0.0)
    error = refusal({"items": {"pattern": "^a"}}, ["a"] * 3, limits)
    assert "took too long" in error.message


def test_validator_used_directly_is_bounded_too() -> None:
    validator = validator_for({"pattern": SLOW})
    with pytest.raises(Exception, match=re.escape(SLOW)):
        validator.is_valid(SLOW_TEXT)


# --- the cost of validating against a schema --------------------------------------------------


def doubling(levels: int, leaf: Any = None) -> dict[str, Any]:
    """Each level applies the next one twice: the validator does 2**levels times the work."""
    defs: dict[str, Any] = {
        f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
        for i in range(levels)
    }
    defs[f"d{levels}"] = leaf if leaf is not None else {"type": "integer"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


@pytest.mark.parametrize("levels", [8, 12, 30])  # 16 levels took 2.8 s per payload, 30 froze the process
def test_a_schema_whose_validation_cost_explodes_is_refused_saying_why(levels: int) -> None:
    with pytest.raises(InvalidSchema) as caught:  # refused by counting, before any validation runs
        check_schema(doubling(levels), LIMITS)
    assert "can apply more than 1000 subschemas" in caught.value.message


def test_the_worst_accepted_doubling_schema_validates_within_the_budget() -> None:
    validator = validator_for(doubling(7))
    validate_payload(validator, 1, LIMITS)  # no budget refusal: a valid payload passes
    assert not refusal_of(validator, "x").message.startswith(
        "validating this payload against the schema took"
    )


@pytest.mark.parametrize(
    "schema",
    [
        {"items": {"$ref": "#"}, "contains": {"$ref": "#"}},  # doubles at each level of nesting
        {"properties": {"a": {"$ref": "#"}}, "patternProperties": {"^a": {"$ref": "#"}}},
        {"anyOf": [{"$ref": "#/$defs/u"}] * 3, "$defs": {"u": {"items": {"$ref": "#"}}}},  # triples
    ],
    ids=["items+contains", "properties+patternProperties", "anyOf-fan-out"],
)
def test_cost_that_explodes_with_payload_nesting_is_refused(schema: Any) -> None:
    with pytest.raises(InvalidSchema, match="can apply more than 1000 subschemas"):
        check_schema(schema, LIMITS)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"l": {"$ref": "#"}, "r": {"$ref": "#"}, "v": {"type": "integer"}}},
        {"anyOf": [{"type": "string"}, {"type": "array", "items": {"$ref": "#"}}]},
        {"$defs": {"n": {"properties": {"next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"},
        {
            "$defs": {
                f"v{i}": {"properties": {"kind": {"const": i}}, "required": ["kind"]} for i in range(50)
            },
            "oneOf": [{"$ref": f"#/$defs/v{i}"} for i in range(50)],
        },
        {"$dynamicAnchor": "node", "properties": {"kids": {"items": {"$dynamicRef": "#node"}}}},
        {"$schema": DRAFT_2019, "$recursiveAnchor": True, "items": {"$recursiveRef": "#"}},
    ],
    ids=["binary-tree", "nested-lists", "linked-list", "tagged-union", "dynamic-ref", "recursive-ref"],
)
def test_ordinary_recursive_and_union_schemas_are_accepted(schema: Any) -> None:
    check_schema(schema, LIMITS)


def test_shape_limits_of_a_schema() -> None:
    assert CostLimits() == CostLimits(
        max_subschemas=4096, max_refs=1000, max_ref_chain=32, max_enum=1000, max_visits=1000
    )
    with pytest.raises(InvalidSchema, match="more than 4096 subschemas"):
        check_schema({"anyOf": [{} for _ in range(4100)]}, LIMITS)
    with pytest.raises(InvalidSchema, match="more than 1000 references"):
        check_schema(
            {"$defs": {"a": {}}, "properties": {f"p{i}": {"$ref": "#/$defs/a"} for i in range(1001)}}, LIMITS
        )
    chain = {f"c{i}": {"$ref": f"#/$defs/c{i + 1}"} for i in range(40)}
    with pytest.raises(InvalidSchema, match="chain of 33 \\$refs"):
        check_schema({"$defs": {**chain, "c40": {}}, "$ref": "#/$defs/c0"}, LIMITS)
    with pytest.raises(InvalidSchema, match="enum has 1001 values; at most 1000") as caught:
        check_schema({"properties": {"e": {"enum": list(range(1001))}}}, LIMITS)
    assert caught.value.details["path"] == "/properties/e/enum"
    check_schema({"enum": list(range(1000))}, LIMITS)


@pytest.mark.parametrize(
    ("schema", "payload"),
    [
        ({"$defs": doubling(7)["$defs"], "items": {"$ref": "#/$defs/d0"}}, [1] * 1000),
        ({"items": {"enum": list(range(1000))}}, [999] * 20_000),
        (
            {"items": {"patternProperties": {f"^{i}": {} for i in range(200)}}},
            [{str(i): 0 for i in range(50)}] * 500,
        ),
    ],
    ids=["doubling-per-element", "enum-per-element", "patterns-per-key"],
)
def test_validation_work_is_bounded_per_payload(schema: Any, payload: Any) -> None:
    validator = validator_for(schema)
    error = refusal_of(validator, payload)
    # Many patterns may spend the time budget of regex searches first: either way the payload is refused.
    assert error.message.startswith(("validating this payload against the schema took more", "a value took"))
    assert error.details["errors"][0]["path"] == "/"


def test_the_work_budget_is_configurable_in_steps_and_seconds() -> None:
    validator = validator_for({"items": {"type": "integer"}})
    validate_payload(validator, [1] * 40, Limits(max_validation_steps=100))
    assert "(100 steps)" in refusal_of(validator, [1] * 60, Limits(max_validation_steps=100)).message
    slow = refusal_of(validator, [1] * 5000, Limits(validation_seconds=0.0))
    assert "(0 seconds)" in slow.message


def test_a_budget_refusal_inside_not_is_no_acceptance() -> None:
    validator = validator_for({"not": {"items": {"type": "integer"}}})
    assert "budget" in refusal_of(validator, [1] * 60, Limits(max_validation_steps=100)).message


# --- regular expressions priced before compiling ----------------------------------------------


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


BOMBS = ["a{3000000}", "(?:a{60000}){60000}", "((a{100}){100}){100}", "(?:abc|def){10000}", "x" * 1001]


@pytest.mark.parametrize("bomb", BOMBS, ids=["one-count", "nested", "product", "expanded", "length"])
@pytest.mark.parametrize(
    ("where", "path"),
    [
        (lambda p: {"type": "string", "pattern": p}, "/pattern"),
        (lambda p: {"patternProperties": {p: {}}}, "/patternProperties/"),
        (lambda p: {"propertyNames": {"pattern": p}}, "/propertyNames/pattern"),
        (lambda p: {"$defs": {"d": {"items": {"pattern": p}}}}, "/$defs/d/items/pattern"),
        (lambda p: {"$schema": DRAFT_7, "definitions": {"d": {"pattern": p}}}, "/definitions/d/pattern"),
    ],
    ids=["pattern", "patternProperties", "propertyNames", "defs", "draft7"],
)
def test_costly_patterns_are_refused_before_compiling(bomb: str, where: Any, path: str) -> None:
    before = _rss_kb()
    started = time.monotonic()
    with pytest.raises(InvalidSchema) as caught:
        check_schema(where(bomb), LIMITS)
    assert time.monotonic() - started < 0.5
    assert _rss_kb() - before < 20_000  # kB: a{3000000} grew the process by 745 MB
    assert caught.value.details["path"].startswith(path)
    assert "would cost too much to compile" in caught.value.message
    assert len(str(caught.value)) < 400


@pytest.mark.parametrize(
    ("pattern", "accepted"),
    [
        ("a{10000}", True),
        ("a{10001}", False),
        ("(?:a{100}){100}", True),
        ("(?:a{100}){101}", False),
        (".{0,10000}", True),
        ("a{,10001}", False),
        ("x" * 1000, True),
        ("x" * 1001, False),
        ("^[a-z0-9-]{1,63}(?:\\.[a-z0-9-]{1,63}){0,126}$", True),
        ("a{10000}b{10000}c", False),
    ],
)
def test_pattern_limits_are_exact(pattern: str, accepted: bool) -> None:
    schema = {"type": "string", "pattern": pattern}
    if accepted:
        check_schema(schema, LIMITS)
    else:
        with pytest.raises(InvalidSchema, match="would cost too much to compile"):
            check_schema(schema, LIMITS)


def test_pattern_limits_and_sizes() -> None:
    assert PatternLimits() == PatternLimits(max_chars=1000, max_repeat=10_000, max_size=20_000)
    assert pattern_size("^\\d{4}-\\d{2}$") == 9
    with pytest.raises(CostlyPattern, match="nests groups too deeply"):
        pattern_size("(" * 499 + "a" + ")" * 499)


def test_a_costly_pattern_in_a_stored_schema_refuses_the_payload_and_is_never_compiled() -> None:
    # Registered before patterns were priced: it must not take the memory at its first send either.
    validator = compile_validator(json.dumps({"type": "string", "pattern": "(?:a{60000}){60000}"}))
    before = _rss_kb()
    error = refusal_of(validator, "aaa")
    assert "too costly to compile" in error.message
    assert _rss_kb() - before < 20_000


def test_a_format_is_never_compiled_as_a_regex() -> None:
    # format is an annotation here, so format "regex" does not compile the value it describes.
    validator = validator_for({"type": "string", "format": "regex"})
    started = time.monotonic()
    validate_payload(validator, "(?:a{60000}){60000}", LIMITS)
    assert time.monotonic() - started < 0.5


def test_the_compiled_pattern_cache_is_bounded_by_size() -> None:
    cache = PatternCache(max_total=25_000)
    for count in range(9_990, 10_000):
        cache.get(f"a{{{count}}}")
    assert cache.total <= 25_000 and len(cache) == 2
    assert cache.get("a{9999}").fullmatch("a" * 9999)


# --- cache -------------------------------------------------------------------------------------


def test_cache_returns_the_same_validator_per_protocol_version() -> None:
    cache = SchemaCache()
    text = check_schema({"type": "object"}, LIMITS)
    first = cache.get(("chat", "1.0.0"), text)
    assert cache.get(("chat", "1.0.0"), text) is first
    assert cache.get(("chat", "2.0.0"), text) is not first
    assert len(cache) == 2


def test_cache_recompiles_when_the_text_differs() -> None:
    cache = SchemaCache()
    first = cache.get(("chat", "1.0.0"), '{"type":"object"}')
    second = cache.get(("chat", "1.0.0"), '{"type":"string"}')
    assert second is not first
    validate_payload(second, "text", LIMITS)


def test_cache_is_bounded_lru() -> None:
    cache = SchemaCache(maxsize=2)
    text = '{"type":"object"}'
    a = cache.get(("a", "1.0.0"), text)
    cache.get(("b", "1.0.0"), text)
    assert cache.get(("a", "1.0.0"), text) is a  # a is now the most recent
    cache.get(("c", "1.0.0"), text)  # evicts b
    assert len(cache) == 2
    assert cache.get(("a", "1.0.0"), text) is a


def test_limits_defaults() -> None:
    assert Limits() == Limits(
        max_payload_bytes=262144,
        max_schema_bytes=65536,
        max_depth=64,
        max_validation_errors=10,
        max_validation_steps=500_000,
        validation_seconds=2.0,
        regex_timeout=0.1,
        regex_budget=1.0,
    )


def test_a_schema_of_many_objects_is_refused_before_the_costly_meta_schema_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schema = {"anyOf": [{} for _ in range(20_000)]}  # 60 KB: the meta-schema check took 1.9 s on it

    def costly(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the meta-schema check ran on a schema the size check should have refused")

    monkeypatch.setattr(jsonschema.Draft202012Validator, "check_schema", costly)
    with pytest.raises(InvalidSchema, match="more than 4096 subschemas"):
        check_schema(schema, LIMITS)
    monkeypatch.undo()
    check_schema({"enum": [{"k": i} for i in range(1000)]}, LIMITS)  # data objects are not subschemas
