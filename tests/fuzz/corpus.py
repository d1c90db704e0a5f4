"""Cost bombs: schemas, patterns, adapter steps and payloads built to blow up CPU or memory.

Each is a tool call that must be answered promptly, refused with a code or accepted, without stalling the
process or growing it past the memory ceiling.
"""

from __future__ import annotations

from typing import Any


def doubling(levels: int) -> dict[str, Any]:
    defs: dict[str, Any] = {
        f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
        for i in range(levels)
    }
    defs[f"d{levels}"] = {"type": "integer"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


SCHEMA_BOMBS: dict[str, Any] = {
    "doubling-16": doubling(16),
    "doubling-30": doubling(30),
    "items-and-contains": {"items": {"$ref": "#"}, "contains": {"$ref": "#"}},
    "ref-cycle": {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    "ref-chain-200": {"$defs": {f"c{i}": {"$ref": f"#/$defs/c{i + 1}"} for i in range(200)} | {"c200": {}}},
    "pattern-3m": {"type": "string", "pattern": "a{3000000}"},
    "pattern-nested": {"type": "string", "pattern": "(?:a{60000}){60000}"},
    "pattern-properties-bomb": {"patternProperties": {"(?:x{9999}){9999}": {}}},
    "property-names-bomb": {"propertyNames": {"pattern": "((a{100}){100}){100}"}},
    "pattern-groups-deep": {"pattern": "(" * 400 + "a" + ")" * 400},
    "enum-huge": {"enum": list(range(20_000))},
    "anyof-wide": {"anyOf": [{} for _ in range(5000)]},
    "unevaluated-stack": {
        "anyOf": [
            {
                "anyOf": [{"anyOf": [{}, {}], "unevaluatedProperties": False}] * 2,
                "unevaluatedProperties": False,
            }
        ]
        * 2,
        "unevaluatedProperties": False,
    },
    "unknown-keywords-40-deep": _nested(40),
    "remote-ref": {"$ref": "https://example.com/schema.json"},
}


def schema_bombs() -> list[tuple[str, str, dict[str, Any]]]:
    """(label, tool, arguments) registering each schema bomb as a new version of protocol ``bomb``."""
    return [
        (
            f"schema:{label}",
            "register_protocol",
            {"name": "bomb", "version": f"1.{i}.0", "schema": schema, "capabilities": ["point_to_point"]},
        )
        for i, (label, schema) in enumerate(SCHEMA_BOMBS.items())
    ]


def adapter_bombs() -> list[tuple[str, str, dict[str, Any]]]:
    base = {"protocol": "canary", "from_version": "1.0.0", "to_version": "2.0.0"}
    deep_rename = [{"op": "rename", "from": "/n", "to": "/n" + "/x" * 63}] * 64
    return [
        ("adapter:op-list", "register_adapter", {**base, "steps": [{"op": [{}] * 10_000, "path": "/k"}]}),
        (
            "adapter:many-steps",
            "register_adapter",
            {**base, "steps": [{"op": "remove", "path": "/k"}] * 10_000},
        ),
        ("adapter:deep-rename", "register_adapter", {**base, "steps": deep_rename}),
        (
            "adapter:huge-mapping",
            "register_adapter",
            {
                **base,
                "steps": [
                    {"op": "map_values", "path": "/text", "mapping": {str(i): "y" * 10 for i in range(5000)}}
                ],
            },
        ),
        (
            "adapter:pointer-long",
            "register_adapter",
            {**base, "steps": [{"op": "remove", "path": "/" + "a" * 100_000}]},
        ),
    ]


def payload_bombs(to: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Sends of payloads that are large, deep or costly to validate, to ``to`` on protocol ``heavy``."""
    send = {"to": to, "protocol": "heavy"}
    return [
        ("payload:max-size-array", "send", {**send, "payload": {"items": list(range(40_000))}}),
        ("payload:over-size", "send", {**send, "payload": {"s": "x" * 300_000}}),
        ("payload:deep-65", "send", {**send, "payload": {"items": _nested(65)}}),
        ("payload:deep-900", "send", {**send, "payload": {"items": _nested(900)}}),
        ("payload:keys-5000", "send", {**send, "payload": {"map": {f"k{i}": i for i in range(5000)}}}),
        ("payload:slow-regex", "send", {**send, "payload": {"word": "a" * 40 + "!"}}),
        ("payload:huge-int", "send", {**send, "payload": {"items": [10**4000]}}),
    ]


# The protocol the payload bombs are sent on: every costly keyword the schema check still accepts.
HEAVY_SCHEMA = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {"type": ["integer", "object"], "minimum": 0},
            "uniqueItems": True,
        },
        "word": {"type": "string", "pattern": "^(a|a)+$"},
        "map": {"type": "object", "patternProperties": {"^k[0-9]+$": {"type": "integer"}}},
    },
}
