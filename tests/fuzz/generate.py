"""Hostile tool arguments derived from each tool's input schema, deterministic by seed.

Each generated case starts from arguments that fit the schema and breaks one thing: a wrong type, a bound
and just past it, a huge or deep value, odd Unicode, an unknown or a missing field, another session's id.
Whether the result still fits the schema is decided by validating it (jsonschema), so the oracle is the
schema the server publishes: what it says is what must be accepted, and nothing else.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import regex

ODD_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u202eevil",
    "zero\u200bwidth",
    "\ufeffbom",
    "\ud800",  # a lone surrogate: valid JSON text, not valid UTF-8
    "😀" * 40,
    "A" + "\u0301" * 200,
    "\U000e0041\U000e0042",  # tag characters
    "line\nbreak",
    "tab\there",
    "سلام",
    "\uffff",
    "' OR 1=1 --",
    "../../etc/passwd",
    "%s%s%n",
    "${jndi:x}",
    "Robert'); DROP TABLE messages;--",
]
WRONG_TYPES: list[Any] = [
    True,
    False,
    "5",
    " 7 ",
    "1e2",
    "true",
    1.5,
    0,
    -1,
    None,
    [],
    {},
    [1],
    {"a": 1},
    "x",
]
# Fields whose valid values wait for as long as they say: the fuzzer keeps them short.
WAITING = {"wait_seconds", "timeout_seconds", "delay_seconds"}
KNOWN = {  # plausible valid strings for names that carry a pattern
    "name": ["fuzz_p", "fuzz-a", "canary"],
    "protocol": ["canary", "fuzz_p"],
    "version": ["1.0.0", "2.0.0"],
    "from_version": ["1.0.0"],
    "to_version": ["2.0.0"],
    "versions": [">=1.0,<2", "^1.0", "*", "==1.0.0"],
    "version_range": [">=1.0", "*"],
    "priority": ["low", "normal", "high"],
}


@dataclass
class Context:
    """What the generator may borrow: other sessions' names and ids, message ids that are not ours."""

    foreign_names: list[str] = field(default_factory=list)
    foreign_ids: list[str] = field(default_factory=list)
    foreign_message_ids: list[str] = field(default_factory=list)

    def strings(self) -> list[str]:
        return [*self.foreign_names, *self.foreign_ids, *self.foreign_message_ids]


@dataclass(frozen=True)
class Case:
    category: str
    tool: str
    arguments: Any
    fits_schema: bool
    label: str


class Generator:
    def __init__(self, tools: list[dict[str, Any]], seed: int, context: Context) -> None:
        self.tools = sorted(tools, key=lambda tool: tool["name"])
        self.random = random.Random(seed)
        self.context = context

    # --- valid values ------------------------------------------------------------------------------

    def _resolve(self, node: Any, root: dict[str, Any]) -> Any:
        seen = 0
        while isinstance(node, dict) and isinstance(node.get("$ref"), str) and seen < 16:
            target: Any = root
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            node, seen = target, seen + 1
        return node

    def valid(self, node: Any, root: dict[str, Any], name: str = "", depth: int = 0) -> Any:
        """A value that fits ``node`` (best effort; the oracle checks)."""
        node = self._resolve(node, root)
        if not isinstance(node, dict):
            return "x"
        for key in ("anyOf", "oneOf"):
            if node.get(key):
                branches = [b for b in node[key] if self._resolve(b, root).get("type") != "null"] or node[key]
                return self.valid(self.random.choice(branches), root, name, depth)
        if "enum" in node:
            return self.random.choice(node["enum"])
        if "const" in node:
            return node["const"]
        kind = node.get("type")
        if isinstance(kind, list):
            kind = self.random.choice(kind)
        if kind == "string":
            return self._valid_string(node, name)
        if kind in ("integer", "number"):
            low = node.get("minimum", node.get("exclusiveMinimum", -1) + 1)
            high = node.get("maximum", node.get("exclusiveMaximum", low + 11) - 1)
            if name in WAITING:
                high = min(high, max(low, 1))
            value = self.random.randint(int(low), int(max(low, min(high, low + 10))))
            return value if kind == "integer" else value + self.random.choice([0, 0.5])
        if kind == "boolean":
            return self.random.choice([True, False])
        if kind == "null":
            return None
        if kind == "array" or "items" in node:
            low = node.get("minItems", 0)
            count = self.random.randint(low, max(low, min(node.get("maxItems", 3), 3)))
            return [self.valid(node.get("items", {}), root, name, depth + 1) for _ in range(count)]
        if kind == "object" or "properties" in node:
            properties = node.get("properties", {})
            required = set(node.get("required", ()))
            return {
                key: self.valid(sub, root, key, depth + 1)
                for key, sub in properties.items()
                if key in required or (depth < 2 and self.random.random() < 0.5)
            }
        return self.random.choice(["x", 1, None, {"k": "v"}])

    def _valid_string(self, node: dict[str, Any], name: str) -> str:
        candidates = [*KNOWN.get(name, ()), "fuzz_x", "x", "1.0.0", "text"]
        if self.random.random() < 0.3:
            candidates = [*self.context.strings(), *candidates]
        pattern = node.get("pattern")
        if self.random.random() < 0.2:
            candidates = self.random.sample(candidates, len(candidates))
        for candidate in candidates:
            fits = node.get("minLength", 0) <= len(candidate) <= node.get("maxLength", 10**9)
            if fits and (pattern is None or regex.search(pattern, candidate)):
                return candidate
        return "x" * max(1, node.get("minLength", 1))

    # --- hostile values ----------------------------------------------------------------------------

    def _leaf_bounds(self, node: Any, root: dict[str, Any], name: str) -> list[Any]:
        node = self._resolve(node, root)
        if not isinstance(node, dict):
            return []
        for key in ("anyOf", "oneOf"):
            if node.get(key):
                return [v for b in node[key] for v in self._leaf_bounds(b, root, name)]
        out: list[Any] = []
        for low_key, step in (
            ("minimum", -1),
            ("exclusiveMinimum", 0),
            ("maximum", 1),
            ("exclusiveMaximum", 0),
        ):
            if isinstance(node.get(low_key), int | float):
                bound = node[low_key]
                if name in WAITING and step > 0 and bound > 2:
                    out.append(bound + step)  # just past the top only: the top itself would wait that long
                    continue
                out += [bound, bound + step] if step else [bound]
        for key, make in (("maxLength", lambda n: "x" * n), ("minLength", lambda n: "x" * n)):
            if isinstance(node.get(key), int):
                bound = node[key]
                out += [make(bound), make(bound + 1)] if key == "maxLength" else [make(max(0, bound - 1))]
        if isinstance(node.get("maxItems"), int):
            item = self.valid(node.get("items", {}), root, name)
            out += [[item] * node["maxItems"], [item] * (node["maxItems"] + 1)]
        if node.get("minItems"):
            out.append([])
        return out

    def _huge(self) -> Any:
        deep: Any = 1
        for _ in range(self.random.choice([65, 200, 900])):  # json.dumps recurses: < 1000
            deep = [deep]
        return self.random.choice(
            [
                "z" * self.random.choice([5_000, 300_000]),
                list(range(20_000)),
                {f"k{i}": i for i in range(5_000)},
                deep,
                10**400,
                -(2**63) - 1,
                1e308,
            ]
        )

    def cases(self, count: int) -> Iterator[Case]:
        kinds = [
            "wrong-type",
            "boundary",
            "huge",
            "unicode",
            "unknown-field",
            "missing-field",
            "foreign-ids",
            "valid",
        ]
        for index in range(count):
            tool = self.tools[index % len(self.tools)]
            schema = tool.get("inputSchema") or {"type": "object"}
            arguments = self.valid(schema, schema)
            if not isinstance(arguments, dict):
                arguments = {}
            properties = schema.get("properties", {})
            kind = kinds[self.random.randrange(len(kinds))]
            label, arguments = self._mutate(kind, arguments, properties, schema)
            fits = jsonschema.Draft202012Validator(schema).is_valid(arguments)
            yield Case(kind, tool["name"], arguments, fits, f"{index}:{tool['name']}:{label}")
        yield Case("not-an-object", self.tools[0]["name"], [], False, "arguments-is-a-list")

    def _mutate(
        self, kind: str, arguments: dict[str, Any], properties: dict[str, Any], schema: dict[str, Any]
    ) -> tuple[str, Any]:
        arguments = copy.deepcopy(arguments)
        names = sorted(properties)
        field_name = self.random.choice(names) if names else "zz"
        node = properties.get(field_name, {})
        if kind == "wrong-type":
            arguments[field_name] = copy.deepcopy(self.random.choice(WRONG_TYPES))
        elif kind == "boundary":
            bounds = self._leaf_bounds(node, schema, field_name)
            if bounds:
                arguments[field_name] = self.random.choice(bounds)
        elif kind == "huge":
            arguments[field_name] = self._huge()
        elif kind == "unicode":
            text = self.random.choice(ODD_TEXT)
            current = arguments.get(field_name)
            arguments[field_name] = (
                [text]
                if isinstance(current, list)
                else {"description": text}
                if isinstance(current, dict)
                else text
            )
        elif kind == "unknown-field":
            arguments[self.random.choice(["zz_unknown", "session_id", "__proto__", "sender"])] = "x"
        elif kind == "missing-field":
            required = schema.get("required", [])
            if required:
                field_name = self.random.choice(required)
                arguments.pop(field_name, None)
        elif kind == "foreign-ids":
            strings = self.context.strings() or ["00000000-0000-0000-0000-000000000000"]
            value = self.random.choice(strings)
            arguments[field_name] = [value] if "ids" in field_name else value
        return f"{kind}:{field_name}", arguments
