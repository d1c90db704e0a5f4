"""Tool profiles: which tools a process offers (``--tools`` / ``MCP_BROKER_TOOLS``), and lean input schemas.

Every host pays for every tool definition in its model's context, on every turn. A profile trims the
list: ``core`` is the ten tools of the SPEC, ``all`` every tool, or a comma list of tool names (the
profile names may appear in it: ``core,release``). The input schemas are trimmed too, where that
changes nothing a model can do: an optional parameter is advertised as ``type: [T, "null"]``
instead of ``anyOf [{type: T}, {type: null}]`` with ``default: null`` (omitting it means the same).
``null`` stays in the schema because it is still accepted: what a schema says is what a tool takes.
Output schemas are left whole: clients validate results against them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument

CORE = (
    "register_protocol",
    "discover_protocols",
    "connect",
    "list_sessions",
    "negotiate",
    "send",
    "broadcast",
    "receive",
    "ack",
    "disconnect",
)
PROFILES = ("core", "all")


@dataclass(frozen=True)
class Profile:
    """The tools one process offers: every tool (``names`` None) or exactly ``names``."""

    spec: str
    names: frozenset[str] | None

    @classmethod
    def parse(cls, spec: str) -> Profile:
        names: set[str] = set()
        for item in (part.strip() for part in spec.split(",")):
            if item == "all":
                return cls(spec, None)
            if item == "core":
                names.update(CORE)
            elif item:
                names.add(item)
        return cls(spec, frozenset(names))

    def enabled(self, name: str) -> bool:
        return self.names is None or name in self.names

    def check(self, known: Iterable[str]) -> None:
        """Refuse names that are no tool of this server, saying which ones there are."""
        known = set(known)
        unknown = sorted((self.names or set()) - known)
        if unknown:
            raise InvalidArgument(
                f"--tools / MCP_BROKER_TOOLS {self.spec!r} names no such tool: {', '.join(unknown)}; "
                f"use {' or '.join(PROFILES)}, or a comma list of: {', '.join(sorted(known))}"
            )
        if self.names is not None and not self.names:
            raise InvalidArgument("--tools / MCP_BROKER_TOOLS names no tool; use core, all or a comma list")


def lean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An input schema without what a model does not need: optional parameters as one type list,
    and no ``additionalProperties: true`` (JSON Schema's default), down through nested objects."""
    schema = dict(schema)
    if isinstance(schema.get("$defs"), dict):  # FastMCP inlines these when it lists the tools
        schema["$defs"] = {name: _lean(sub) for name, sub in schema["$defs"].items()}
    if isinstance(schema.get("properties"), dict):
        schema["properties"] = {name: _lean(prop) for name, prop in schema["properties"].items()}
    return schema


def _lean(prop: Any) -> Any:
    if not isinstance(prop, dict):
        return prop
    if prop.get("additionalProperties") is True:
        prop = {k: v for k, v in prop.items() if k != "additionalProperties"}
    options = prop.get("anyOf")
    if "default" in prop and prop["default"] is None and isinstance(options, list) and _NULL in options:
        rest = [o for o in options if o != _NULL]
        outer = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
        if len(rest) == 1 and isinstance(rest[0], dict) and isinstance(rest[0].get("type"), str):
            prop = {**rest[0], **outer, "type": [rest[0]["type"], "null"]}
            if isinstance(prop.get("enum"), list):  # an enum without null would refuse what is taken
                prop["enum"] = [*prop["enum"], None]
        else:
            prop = {**outer, "anyOf": [*rest, _NULL]}
        return _lean(prop)
    if isinstance(prop.get("properties"), dict):
        prop = lean_schema(prop)
    if isinstance(prop.get("items"), dict):
        prop = {**prop, "items": _lean(prop["items"])}
    return prop


_NULL = {"type": "null"}


@dataclass(frozen=True)
class Size:
    """What a tool list costs a host's model context: bytes of JSON and a rough token count."""

    tools: int
    input_bytes: int  # names, descriptions and input schemas
    total_bytes: int  # the same with output schemas

    @staticmethod
    def tokens(size: int) -> int:
        return round(size / 4)  # ≈4 bytes a token for JSON-ish English text

    def as_dict(self) -> dict[str, int]:
        return {
            "tools": self.tools,
            "input_bytes": self.input_bytes,
            "input_tokens": self.tokens(self.input_bytes),
            "total_bytes": self.total_bytes,
            "total_tokens": self.tokens(self.total_bytes),
        }


def size_of(tools: Iterable[Any]) -> Size:
    """The size of MCP tool definitions (``mcp.types.Tool``) as ``tools/list`` sends them."""
    count = inputs = total = 0
    for tool in tools:
        base = {"name": tool.name, "description": tool.description, "inputSchema": tool.input_schema}
        count += 1
        inputs += len(json.dumps(base))
        total += len(json.dumps({**base, "outputSchema": tool.output_schema}))
    return Size(count, inputs, total)
