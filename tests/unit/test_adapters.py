"""Unit tests of version adapters: parsing steps, applying them, checking them, finding paths."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from mcp_broker.adapter_checks import check_adapter
from mcp_broker.adapters import (
    MAX_HOPS,
    MAX_PATH_STEPS,
    MAX_STEPS,
    apply_steps,
    dump_steps,
    find_path,
    parse_steps,
    reachable,
    split_pointer,
    transform,
)
from mcp_broker.errors import BrokerError, InvalidAdapter, InvalidArgument, TransformFailed
from mcp_broker.schemas import Limits
from mcp_broker.versions import parse_range

SPEC_STEPS: list[dict[str, Any]] = [
    {"op": "rename", "from": "/text", "to": "/body"},
    {"op": "set_default", "path": "/lang", "value": "en"},
    {"op": "remove", "path": "/draft"},
    {"op": "map_values", "path": "/level", "mapping": {"hi": "high", "lo": "low"}},
    {"op": "wrap", "path": "/tag"},
    {"op": "unwrap", "path": "/tags"},
]


def run(payload: Any, *steps: dict[str, Any]) -> Any:
    """Apply raw steps and check that the input was left alone."""
    before = copy.deepcopy(payload)
    result = apply_steps(payload, parse_steps(list(steps)))
    assert payload == before
    return result


# --- parsing -------------------------------------------------------------------------------------


def test_spec_example_parses_and_dumps_back_to_the_same_json() -> None:
    steps = parse_steps(SPEC_STEPS)
    assert [step.op for step in steps] == ["rename", "set_default", "remove", "map_values", "wrap", "unwrap"]
    assert dump_steps(steps) == SPEC_STEPS


def test_error_codes() -> None:
    assert issubclass(InvalidAdapter, BrokerError) and InvalidAdapter.code == "INVALID_ADAPTER"
    assert issubclass(TransformFailed, BrokerError) and TransformFailed.code == "TRANSFORM_FAILED"
    assert InvalidAdapter.__doc__ and TransformFailed.__doc__


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("rename", "steps must be a list"),
        ([{"path": "/a"}], "steps[0].op must be one of rename, set_default, remove, map_values, wrap"),
        ([{"op": "remove", "path": "/a"}, {"op": "explode"}], "steps[1].op must be one of rename"),
        ([{"op": "explode"}], "; got 'explode'"),
        ([{"op": "rename", "from": "/a"}], "steps[0].to: Field required"),
        ([{"op": "set_default", "path": "/a"}], "steps[0].value: Field required"),
        ([{"op": "remove", "path": "/a", "extra": 1}], "steps[0].extra"),
        ([{"op": "remove", "path": ""}], "root pointer '' cannot be a step's target"),
        ([{"op": "wrap", "path": "tags"}], "start it with '/'"),
        ([{"op": "remove", "path": "/a~2b"}], "'~' must be written '~0'"),
        ([{"op": "remove", "path": "/a~"}], "'~' must be written '~0'"),
        ([{"op": "remove", "path": 5}], "steps[0].path"),
        ([{"op": "map_values", "path": "/a", "mapping": {}}], "steps[0].mapping"),
        ([{"op": "remove", "path": "/x" * 65}], "at most 64 are allowed"),
        (["remove /a"], "steps[0]"),
    ],
)
def test_malformed_steps_are_refused_naming_the_step(raw: Any, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_steps(raw)
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("INVALID_ARGUMENT: ")


@pytest.mark.parametrize(
    "raw",
    [
        [{"op": [{}] * 10000, "path": "/k"}],  # answered 40 KB, echoing the whole value
        [{"op": "x" * 100_000, "path": "/k"}],
        [{"op": "remove", "path": "/k", "z" * 10_000: 1}],
        [{"op": "remove", "path": "x" * 100_000}],
        [{"op": "map_values", "path": "/k", "mapping": {"a": 1}, "extra": [[[[[[[[[[1]]]]]]]]]] * 1000}],
    ],
)
def test_refusals_quote_an_excerpt_not_the_whole_value(raw: Any) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_steps(raw)
    assert len(str(caught.value)) < 300, str(caught.value)[:400]
    assert "\n" not in str(caught.value)


def test_step_count_is_bounded() -> None:
    assert len(parse_steps([{"op": "remove", "path": "/a"}] * MAX_STEPS)) == MAX_STEPS
    with pytest.raises(InvalidArgument, match="at most 64 steps"):
        parse_steps([{"op": "remove", "path": "/a"}] * (MAX_STEPS + 1))


def test_pointer_escapes_and_empty_segments() -> None:
    assert split_pointer("/a~1b/m~0n") == ("a/b", "m~n")
    assert split_pointer("/~01") == ("~1",)  # ~0 first, so this is '~1' and not '/'
    assert split_pointer("/") == ("",)
    assert split_pointer("/a//b") == ("a", "", "b")


def test_steps_are_frozen() -> None:
    step = parse_steps([{"op": "remove", "path": "/a"}])[0]
    with pytest.raises(ValueError, match="frozen"):
        step.path = "/b"  # type: ignore[misc]


# --- applying: each op -------------------------------------------------------------------------


def test_spec_example_applies() -> None:
    payload = {"text": "hi", "draft": True, "level": "lo", "tag": "x", "tags": ["y"]}
    assert run(payload, *SPEC_STEPS) == {
        "body": "hi",
        "lang": "en",
        "level": "low",
        "tag": ["x"],
        "tags": "y",
    }


def test_rename_top_level_and_absent_source() -> None:
    assert run({"a": 1, "b": 2}, {"op": "rename", "from": "/a", "to": "/c"}) == {"b": 2, "c": 1}
    assert run({"b": 2}, {"op": "rename", "from": "/a", "to": "/c"}) == {"b": 2}
    assert run({"a": None}, {"op": "rename", "from": "/a", "to": "/c"}) == {"c": None}


def test_rename_into_a_nested_object_creates_the_parents() -> None:
    result = run({"text": "hi"}, {"op": "rename", "from": "/text", "to": "/content/body/text"})
    assert result == {"content": {"body": {"text": "hi"}}}


def test_rename_into_an_existing_nested_object_keeps_its_siblings() -> None:
    result = run({"text": "hi", "meta": {"id": 1}}, {"op": "rename", "from": "/text", "to": "/meta/text"})
    assert result == {"meta": {"id": 1, "text": "hi"}}


def test_rename_out_of_a_nested_object_leaves_the_object() -> None:
    result = run(
        {"meta": {"author": "ann", "id": 1}}, {"op": "rename", "from": "/meta/author", "to": "/author"}
    )
    assert result == {"meta": {"id": 1}, "author": "ann"}


def test_rename_a_value_into_itself_nests_it_and_out_lifts_it() -> None:
    assert run({"a": 1}, {"op": "rename", "from": "/a", "to": "/a/b"}) == {"a": {"b": 1}}
    assert run({"a": {"b": 1, "c": 2}}, {"op": "rename", "from": "/a/b", "to": "/a"}) == {"a": 1}
    assert run({"a": 1}, {"op": "rename", "from": "/a", "to": "/a"}) == {"a": 1}


def test_rename_overwrites_an_existing_target() -> None:
    assert run({"a": 1, "b": 2}, {"op": "rename", "from": "/a", "to": "/b"}) == {"b": 1}


def test_rename_with_escaped_names() -> None:
    result = run({"a/b": 1, "x": {"m~n": 2}}, {"op": "rename", "from": "/a~1b", "to": "/x/c~0d"})
    assert result == {"x": {"m~n": 2, "c~d": 1}}
    result = run({"x": {"m~n": 2}}, {"op": "rename", "from": "/x/m~0n", "to": "/p~1q"})
    assert result == {"x": {}, "p/q": 2}


def test_rename_below_a_non_object_fails_naming_the_step() -> None:
    steps = parse_steps([{"op": "remove", "path": "/z"}, {"op": "rename", "from": "/a", "to": "/b/c"}])
    with pytest.raises(TransformFailed) as caught:
        apply_steps({"a": 1, "b": "text"}, steps)
    message = str(caught.value)
    assert message.startswith("TRANSFORM_FAILED: steps[1] (rename /a -> /b/c)")
    assert "/b/c" in message and "a string" in message
    assert caught.value.details["step"] == 1


def test_set_default_only_where_nothing_is() -> None:
    step = {"op": "set_default", "path": "/lang", "value": "en"}
    assert run({}, step) == {"lang": "en"}
    assert run({"lang": "fr"}, step) == {"lang": "fr"}
    assert run({"lang": None}, step) == {"lang": None}  # null is present
    assert run({"lang": ""}, step) == {"lang": ""}


def test_set_default_creates_nested_objects() -> None:
    step = {"op": "set_default", "path": "/meta/format/lang", "value": "en"}
    assert run({"a": 1}, step) == {"a": 1, "meta": {"format": {"lang": "en"}}}
    assert run({"meta": {"id": 1}}, step) == {"meta": {"id": 1, "format": {"lang": "en"}}}
    with pytest.raises(TransformFailed, match="null"):
        run({"meta": None}, step)


def test_set_default_value_is_copied_not_shared() -> None:
    steps = parse_steps([{"op": "set_default", "path": "/opts", "value": {"flags": []}}])
    first = apply_steps({}, steps)
    first["opts"]["flags"].append("x")
    assert apply_steps({}, steps) == {"opts": {"flags": []}}
    assert dump_steps(steps)[0]["value"] == {"flags": []}


def test_remove_present_absent_and_nested() -> None:
    step = {"op": "remove", "path": "/meta/draft"}
    assert run({"meta": {"draft": True, "id": 1}}, step) == {"meta": {"id": 1}}
    assert run({"meta": {"id": 1}}, step) == {"meta": {"id": 1}}
    assert run({}, step) == {}
    assert run({"meta": "text"}, step) == {"meta": "text"}
    assert run("just a string", step) == "just a string"


def test_map_values() -> None:
    step = {"op": "map_values", "path": "/level", "mapping": {"hi": "high", "1": "one", "n": 3}}
    assert run({"level": "hi"}, step) == {"level": "high"}
    assert run({"level": "medium"}, step) == {"level": "medium"}
    assert run({"level": 1}, step) == {"level": 1}  # only strings are looked up
    assert run({"level": "n"}, step) == {"level": 3}
    assert run({}, step) == {}


def test_wrap() -> None:
    step = {"op": "wrap", "path": "/tag"}
    assert run({"tag": "x"}, step) == {"tag": ["x"]}
    assert run({"tag": ["x", "y"]}, step) == {"tag": ["x", "y"]}
    assert run({"tag": []}, step) == {"tag": []}
    assert run({"tag": {"k": 1}}, step) == {"tag": [{"k": 1}]}
    assert run({"tag": None}, step) == {"tag": [None]}
    assert run({}, step) == {}


def test_unwrap() -> None:
    step = {"op": "unwrap", "path": "/tags"}
    assert run({"tags": ["x"]}, step) == {"tags": "x"}
    assert run({"tags": [["x"]]}, step) == {"tags": ["x"]}
    assert run({"tags": []}, step) == {}  # an empty list becomes an absent field
    assert run({"tags": "x"}, step) == {"tags": "x"}
    assert run({}, step) == {}


def test_unwrap_of_a_longer_list_fails() -> None:
    with pytest.raises(TransformFailed, match=r"steps\[0\] \(unwrap /tags\): the list has 2 elements"):
        run({"tags": ["x", "y"]}, {"op": "unwrap", "path": "/tags"})


def test_wrap_then_unwrap_round_trips() -> None:
    payload = {"tag": {"k": [1]}}
    assert run(payload, {"op": "wrap", "path": "/tag"}, {"op": "unwrap", "path": "/tag"}) == payload


def test_array_elements_by_index() -> None:
    payload = {"items": [{"level": "hi"}, {"level": "lo"}], "tags": ["a", "b"]}
    mapped = run(payload, {"op": "map_values", "path": "/items/1/level", "mapping": {"lo": "low"}})
    assert mapped["items"] == [{"level": "hi"}, {"level": "low"}]
    assert run(payload, {"op": "remove", "path": "/tags/0"})["tags"] == ["b"]
    moved = run(payload, {"op": "rename", "from": "/tags/0", "to": "/first"})
    assert (moved["tags"], moved["first"]) == (["b"], "a")
    assert run(payload, {"op": "set_default", "path": "/tags/2", "value": "c"})["tags"] == ["a", "b", "c"]
    assert run(payload, {"op": "set_default", "path": "/tags/1", "value": "c"})["tags"] == ["a", "b"]
    assert run(payload, {"op": "remove", "path": "/tags/-"}) == payload
    assert run(payload, {"op": "remove", "path": "/tags/01"}) == payload  # not an index
    with pytest.raises(TransformFailed, match="a list of 2 elements"):
        run(payload, {"op": "set_default", "path": "/tags/5", "value": "c"})


def test_numeric_names_are_object_members_in_objects() -> None:
    assert run({"codes": {"0": "ok"}}, {"op": "rename", "from": "/codes/0", "to": "/ok"}) == {
        "codes": {},
        "ok": "ok",
    }


def test_input_is_never_mutated_and_result_shares_nothing() -> None:
    payload = {"meta": {"tags": ["x"]}, "keep": {"deep": [1, {"k": 2}]}}
    before = copy.deepcopy(payload)
    result = apply_steps(payload, parse_steps([{"op": "unwrap", "path": "/meta/tags"}]))
    assert payload == before
    result["keep"]["deep"][1]["k"] = 99
    assert payload == before
    transform(payload, [parse_steps([{"op": "remove", "path": "/keep/deep/0"}])])
    assert payload == before


def test_set_default_on_a_scalar_payload_fails() -> None:
    with pytest.raises(TransformFailed, match="a string"):
        run("text", {"op": "set_default", "path": "/a", "value": 1})


# --- transform: chains -----------------------------------------------------------------------


def test_transform_chains_adapters_in_order() -> None:
    hop1 = parse_steps([{"op": "rename", "from": "/text", "to": "/body"}])
    hop2 = parse_steps(
        [{"op": "rename", "from": "/body", "to": "/content/body"}, {"op": "wrap", "path": "/tag"}]
    )
    assert transform({"text": "hi", "tag": "t"}, [hop1, hop2]) == {"content": {"body": "hi"}, "tag": ["t"]}
    assert transform({"text": "hi"}, []) == {"text": "hi"}


def test_transform_failure_names_the_adapter() -> None:
    hop1 = parse_steps([{"op": "wrap", "path": "/tags"}])
    hop2 = parse_steps([{"op": "remove", "path": "/x"}, {"op": "unwrap", "path": "/tags"}])
    with pytest.raises(TransformFailed) as caught:
        transform({"tags": ["a", "b"]}, [hop1, hop2], labels=["1.0.0 -> 1.1.0", "1.1.0 -> 2.0.0"])
    assert str(caught.value).startswith("TRANSFORM_FAILED: adapter 1.1.0 -> 2.0.0: steps[1] (unwrap /tags)")
    assert caught.value.details == {"hop": 1, "step": 1}
    with pytest.raises(TransformFailed, match="adapter 2 of 2: steps"):
        transform({"tags": ["a", "b"]}, [hop1, hop2])


# --- check_adapter -------------------------------------------------------------------------------

NOTE_1 = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "draft": {"type": "boolean"},
        "level": {"enum": ["hi", "lo"]},
        "tag": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "meta": {"$ref": "#/$defs/meta"},
        "count": {"type": "integer"},
    },
    "$defs": {"meta": {"type": "object", "properties": {"author": {"type": "string"}}}},
}
NOTE_2 = {
    "type": "object",
    "properties": {
        "body": {"type": "string"},
        "lang": {"enum": ["en", "fr"]},
        "level": {"enum": ["high", "low"]},
        "tag": {"type": "array", "items": {"type": "string"}},
        "tags": {"type": "string"},
        "meta": {"type": "object", "properties": {"format": {"$ref": "#/$defs/format"}}},
    },
    "$defs": {"format": {"type": "string", "maxLength": 10}},
}


def check(
    steps: list[dict[str, Any]], source: dict[str, Any] = NOTE_1, target: dict[str, Any] = NOTE_2
) -> None:
    check_adapter(parse_steps(steps), source, target)


def refused(
    steps: list[dict[str, Any]], source: dict[str, Any] = NOTE_1, target: dict[str, Any] = NOTE_2
) -> str:
    with pytest.raises(InvalidAdapter) as caught:
        check(steps, source, target)
    assert str(caught.value).startswith("INVALID_ADAPTER: steps[")
    return str(caught.value)


def test_spec_example_is_accepted() -> None:
    check(SPEC_STEPS)
    check([])


def test_a_missing_source_field_is_refused_with_the_fields_there() -> None:
    message = refused([{"op": "remove", "path": "/draft"}, {"op": "rename", "from": "/txt", "to": "/body"}])
    assert "steps[1] (rename /txt -> /body): there is no /txt" in message
    assert "fields at /: count, level, meta, tag, tags, text" in message  # draft was removed by steps[0]


@pytest.mark.parametrize("op", ["remove", "map_values", "wrap", "unwrap"])
def test_every_reading_op_needs_an_existing_path(op: str) -> None:
    step: dict[str, Any] = {"op": op, "path": "/nope"}
    if op == "map_values":
        step["mapping"] = {"a": "b"}
    assert "steps[0]" in refused([step]) and "there is no /nope" in refused([step])


def test_steps_are_checked_in_order_against_the_changing_shape() -> None:
    check([{"op": "rename", "from": "/text", "to": "/body"}, {"op": "remove", "path": "/body"}])
    message = refused([{"op": "rename", "from": "/text", "to": "/body"}, {"op": "remove", "path": "/text"}])
    assert "steps[1] (remove /text): /text was removed or moved away by an earlier step" in message
    message = refused([{"op": "remove", "path": "/draft"}, {"op": "wrap", "path": "/draft"}])
    assert message.startswith("INVALID_ADAPTER: steps[1]")


def test_rename_moves_the_subschema() -> None:
    check(
        [
            {"op": "rename", "from": "/meta", "to": "/info"},
            {"op": "rename", "from": "/info/author", "to": "/by"},
        ]
    )
    message = refused(
        [{"op": "rename", "from": "/meta", "to": "/info"}, {"op": "remove", "path": "/info/nope"}]
    )
    assert "steps[1]" in message and "fields at /info: author" in message
    check([{"op": "rename", "from": "/text", "to": "/content/text"}, {"op": "wrap", "path": "/content/text"}])


def test_paths_follow_local_refs_in_defs_and_definitions() -> None:
    check([{"op": "rename", "from": "/meta/author", "to": "/author"}])
    assert "fields at /meta: author" in refused([{"op": "remove", "path": "/meta/editor"}])
    draft7 = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"person": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "type": "object",
        "properties": {"by": {"$ref": "#/definitions/person"}},
    }
    check([{"op": "wrap", "path": "/by/name"}], draft7, {})
    assert "fields at /by: name" in refused([{"op": "wrap", "path": "/by/nom"}], draft7, {})


def test_recursive_schemas_do_not_hang() -> None:
    tree = {
        "$defs": {"node": {"type": "object", "properties": {"value": {}, "child": {"$ref": "#/$defs/node"}}}},
        "$ref": "#/$defs/node",
    }
    check([{"op": "remove", "path": "/child/child/child/value"}], tree, {})
    assert "steps[0]" in refused([{"op": "remove", "path": "/child/child/other"}], tree, {})
    looped = {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
    check([{"op": "remove", "path": "/anything"}], looped, {})


def test_schemas_without_property_info_accept_any_path() -> None:
    check([{"op": "rename", "from": "/a/b/c", "to": "/d"}], {}, {})
    check([{"op": "remove", "path": "/free/x"}], {"type": "object", "properties": {"free": {}}}, {})
    extras = {"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "string"}}
    check([{"op": "map_values", "path": "/zzz", "mapping": {"a": "b"}}], extras, {})
    patterned = {"type": "object", "properties": {"a": {}}, "patternProperties": {"^x": {}}}
    check([{"op": "remove", "path": "/x1"}], patterned, {})
    closed = {"type": "object", "properties": {"a": {}}, "additionalProperties": False}
    assert "fields at /: a" in refused([{"op": "remove", "path": "/b"}], closed, {})


def test_combined_schemas_contribute_their_properties() -> None:
    combined = {
        "allOf": [{"$ref": "#/$defs/base"}, {"properties": {"extra": {"type": "string"}}}],
        "$defs": {"base": {"type": "object", "properties": {"id": {"type": "string"}}}},
    }
    check([{"op": "remove", "path": "/id"}, {"op": "wrap", "path": "/extra"}], combined, {})
    assert "extra, id" in refused([{"op": "remove", "path": "/other"}], combined, {})
    either = {"anyOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}}]}
    check([{"op": "remove", "path": "/a"}, {"op": "remove", "path": "/b"}], either, {})


def test_array_items_are_walked_by_index() -> None:
    source = {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {"type": "object", "properties": {"name": {"type": "string"}}},
            },
            "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
        },
    }
    check(
        [{"op": "wrap", "path": "/items/0/name"}, {"op": "rename", "from": "/items/3/name", "to": "/n"}],
        source,
        {},
    )
    assert "fields at /items/0: name" in refused([{"op": "remove", "path": "/items/0/nom"}], source, {})
    assert "is array, not an object" in refused([{"op": "remove", "path": "/items/name"}], source, {})
    check([{"op": "map_values", "path": "/pair/0", "mapping": {"a": "b"}}], source, {})
    assert "integer; only strings" in refused(
        [{"op": "map_values", "path": "/pair/1", "mapping": {"a": "b"}}], source, {}
    )


def test_writes_below_a_non_object_are_refused() -> None:
    message = refused([{"op": "set_default", "path": "/text/lang", "value": "en"}])
    assert "steps[0] (set_default /text/lang): cannot write /text/lang: /text is string" in message
    assert "/count is integer" in refused([{"op": "rename", "from": "/text", "to": "/count/text"}])
    assert "/tags is array" in refused([{"op": "rename", "from": "/text", "to": "/tags/x"}])


def test_set_default_value_must_match_the_target_schema_there() -> None:
    check([{"op": "set_default", "path": "/lang", "value": "fr"}])
    message = refused(
        [{"op": "remove", "path": "/tag"}, {"op": "set_default", "path": "/lang", "value": "de"}]
    )
    assert "steps[1] (set_default /lang): the value does not match the target schema" in message
    assert "'de' is not one of ['en', 'fr']" in message
    check([{"op": "set_default", "path": "/meta/format", "value": "md"}])  # $ref in the target
    assert "steps[0]" in refused([{"op": "set_default", "path": "/meta/format", "value": "x" * 11}])
    check([{"op": "set_default", "path": "/unknown", "value": {"any": ["thing"]}}])  # no subschema there


def test_set_default_adds_the_target_subschema_to_the_shape() -> None:
    check(
        [
            {"op": "set_default", "path": "/extra/flag", "value": True},
            {"op": "rename", "from": "/extra/flag", "to": "/f"},
        ]
    )
    check(
        [
            {"op": "set_default", "path": "/lang", "value": "en"},
            {"op": "map_values", "path": "/lang", "mapping": {"en": "fr"}},
        ]
    )
    check([{"op": "set_default", "path": "/text", "value": "already there"}, {"op": "wrap", "path": "/text"}])


def test_op_specific_refusals() -> None:
    assert "/tags is already a list; wrap would do nothing" in refused([{"op": "wrap", "path": "/tags"}])
    message = refused([{"op": "wrap", "path": "/tag"}, {"op": "wrap", "path": "/tag"}])
    assert message.startswith("INVALID_ADAPTER: steps[1]") and "already a list" in message
    assert "/tag is string, not a list; unwrap" in refused([{"op": "unwrap", "path": "/tag"}])
    assert "is boolean; only strings are mapped" in refused(
        [{"op": "map_values", "path": "/draft", "mapping": {"a": "b"}}]
    )
    check(
        [
            {"op": "wrap", "path": "/tag"},
            {"op": "unwrap", "path": "/tag"},
            {"op": "map_values", "path": "/tag", "mapping": {"a": "b"}},
        ]
    )
    check([{"op": "unwrap", "path": "/tags"}, {"op": "map_values", "path": "/tags", "mapping": {"a": "b"}}])


def test_check_adapter_bounds_the_step_count() -> None:
    steps = parse_steps([{"op": "remove", "path": "/a"}] * MAX_STEPS)
    with pytest.raises(InvalidAdapter, match="at most 64 steps"):
        check_adapter([*steps, steps[0]], {}, {})


# --- finding paths -----------------------------------------------------------------------------


def only(*versions: str) -> Any:
    return lambda version: version in versions


def test_start_accepted_needs_no_adapter() -> None:
    assert find_path([("1.0.0", "2.0.0")], "1.0.0", only("1.0.0", "2.0.0")) == []
    assert find_path([], "1.0.0", parse_range("^1").contains) == []


def test_direct_upgrade_and_downgrade() -> None:
    edges = [("1.0.0", "2.0.0"), ("2.0.0", "1.0.0")]
    assert find_path(edges, "1.0.0", parse_range("^2").contains) == [("1.0.0", "2.0.0")]
    assert find_path(edges, "2.0.0", parse_range("~1.0").contains) == [("2.0.0", "1.0.0")]


def test_chained_path() -> None:
    edges = [("1.0.0", "1.1.0"), ("1.1.0", "2.0.0")]
    assert find_path(edges, "1.0.0", only("2.0.0")) == [("1.0.0", "1.1.0"), ("1.1.0", "2.0.0")]
    assert find_path(edges, "2.0.0", only("1.0.0")) is None  # adapters are one-way


def test_no_path() -> None:
    assert find_path([], "1.0.0", only("2.0.0")) is None
    assert find_path([("1.0.0", "1.1.0"), ("3.0.0", "2.0.0")], "1.0.0", only("2.0.0")) is None


def test_cycles_terminate() -> None:
    cycle = [("1.0.0", "2.0.0"), ("2.0.0", "1.0.0"), ("1.0.0", "1.0.0")]
    assert find_path(cycle, "1.0.0", only("3.0.0")) is None
    assert find_path([*cycle, ("2.0.0", "3.0.0")], "1.0.0", only("3.0.0")) == [
        ("1.0.0", "2.0.0"),
        ("2.0.0", "3.0.0"),
    ]
    assert set(reachable(cycle, "2.0.0")) == {"1.0.0", "2.0.0"}


def test_shortest_path_is_preferred() -> None:
    edges = [("1.0.0", "1.1.0"), ("1.1.0", "1.2.0"), ("1.2.0", "2.0.0"), ("1.0.0", "2.0.0")]
    assert find_path(edges, "1.0.0", only("2.0.0")) == [("1.0.0", "2.0.0")]
    # Fewer hops wins over a newer version further away.
    edges = [("1.0.0", "1.5.0"), ("1.0.0", "1.1.0"), ("1.1.0", "3.0.0")]
    assert find_path(edges, "1.0.0", parse_range(">=1.5").contains) == [("1.0.0", "1.5.0")]


def test_newest_target_among_equally_short_paths() -> None:
    edges = [("1.0.0", "1.5.0"), ("1.0.0", "1.10.0"), ("1.0.0", "1.9.0")]
    assert find_path(edges, "1.0.0", only("1.5.0", "1.9.0", "1.10.0")) == [
        ("1.0.0", "1.10.0")
    ]  # semver, not text
    downgrades = [("3.0.0", "2.0.0"), ("3.0.0", "1.0.0")]
    assert find_path(downgrades, "3.0.0", parse_range("<3").contains) == [("3.0.0", "2.0.0")]


def test_reachable_lists_shortest_paths_including_start() -> None:
    edges = [
        ("1.0.0", "1.1.0"),
        ("1.1.0", "2.0.0"),
        ("1.0.0", "2.0.0"),
        ("1.0.0", "1.1.0"),
        ("2.0.0", "3.0.0"),
    ]
    assert reachable(edges, "1.0.0") == {
        "1.0.0": [],
        "1.1.0": [("1.0.0", "1.1.0")],
        "2.0.0": [("1.0.0", "2.0.0")],
        "3.0.0": [("1.0.0", "2.0.0"), ("2.0.0", "3.0.0")],
    }
    assert reachable(edges, "9.0.0") == {"9.0.0": []}
    assert reachable(iter(edges), "3.0.0") == {"3.0.0": []}  # any iterable of edges


# --- the cost of applying a route ----------------------------------------------------------------


def test_routes_chain_at_most_max_hops_adapters() -> None:
    versions = [f"1.{i}.0" for i in range(MAX_HOPS + 2)]
    edges = list(itertools.pairwise(versions))
    assert len(find_path(edges, versions[0], only(versions[MAX_HOPS])) or []) == MAX_HOPS
    assert find_path(edges, versions[0], only(versions[MAX_HOPS + 1])) is None


def test_a_route_applies_a_bounded_number_of_steps() -> None:
    steps = parse_steps([{"op": "set_default", "path": "/n", "value": 1}])
    assert transform({}, [steps] * MAX_HOPS) == {"n": 1}
    with pytest.raises(TransformFailed, match=f"at most {MAX_HOPS} adapters and {MAX_PATH_STEPS} steps"):
        transform({}, [steps] * (MAX_HOPS + 1))


def test_a_route_cannot_grow_the_payload_past_the_limits() -> None:
    big = parse_steps([{"op": "set_default", "path": f"/k{i}", "value": "x" * 60_000} for i in range(5)])
    with pytest.raises(
        TransformFailed, match=r"adapter v1 -> v2: the adapted payload is \d+ bytes serialized"
    ):
        transform({}, [big, big], labels=["v1 -> v2", "v2 -> v3"])
    deep = parse_steps([{"op": "rename", "from": "/a", "to": "/a" + "/b" * 63} for _ in range(MAX_STEPS)])
    with pytest.raises(TransformFailed, match="nesting depth exceeds 64"):
        transform({"a": 1}, [deep])
    with pytest.raises(TransformFailed, match="nesting depth exceeds 9"):
        transform({"a": 1}, [deep], limits=Limits(max_depth=9))
