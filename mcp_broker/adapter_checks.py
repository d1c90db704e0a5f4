"""Checking an adapter against the two schemas it joins, when it is registered.

A step must make sense for both versions: its pointers must address what the source schema can
hold and what the target schema expects, with the kinds of value they declare. The schemas are
read, never run: ``$ref`` is followed within the schema only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from mcp_broker.adapters import (
    INDEX_RE,
    MAX_STEPS,
    MapValues,
    Remove,
    Rename,
    SetDefault,
    Step,
    Wrap,
    describe,
    split_pointer,
)
from mcp_broker.errors import InvalidAdapter, PayloadInvalid
from mcp_broker.schemas import Limits, compile_validator, json_pointer, validate_payload


class _ShapeError(Exception):
    """A step does not fit the simulated payload shape; the message says why."""


def _resolve_ref(ref: str, root: Any) -> Any:
    """The target of a local ``#`` / ``#/...`` reference; ``None`` (unknown) for anything else."""
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        return None
    node = root
    for raw in ref[2:].split("/"):
        token = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and INDEX_RE.fullmatch(token) and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node


@dataclass
class _Facts:
    """What a schema says about shape, gathered through ``$ref``, ``allOf``, ``anyOf`` and ``oneOf``."""

    members: dict[str, Any] | None = None  # declared properties; None when none are declared
    extras: bool = False  # additionalProperties (not false) or patternProperties admit other names
    types: set[str] = field(default_factory=set)  # empty when the schema does not say
    prefix: list[Any] = field(default_factory=list)
    items: Any = None


def _facts(schema: Any, root: Any) -> _Facts:
    facts, stack, seen = _Facts(), [schema], set[int]()
    while stack and len(seen) < 256:  # $ref cycles end at `seen`; the cap bounds hostile fan-out
        node = stack.pop()
        if not isinstance(node, dict) or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node.get("$ref"), str):
            stack.append(_resolve_ref(node["$ref"], root))
        for key in ("allOf", "anyOf", "oneOf"):
            if isinstance(node.get(key), list):
                stack.extend(node[key])
        kind = node.get("type")
        facts.types.update(k for k in ([kind] if isinstance(kind, str) else kind or ()) if isinstance(k, str))
        if isinstance(node.get("properties"), dict):
            facts.members = {**node["properties"], **(facts.members or {})}
            facts.types.add("object")
        if node.get("additionalProperties", False) is not False or "patternProperties" in node:
            facts.extras = True
        items, prefix = node.get("items"), node.get("prefixItems")
        if isinstance(items, list):  # draft 4-7 tuple form
            items, prefix = node.get("additionalItems"), items
        if isinstance(prefix, list) or isinstance(items, dict):
            facts.prefix = facts.prefix or (prefix if isinstance(prefix, list) else [])
            facts.items = facts.items if facts.items is not None else items
            facts.types.add("array")
    return facts


class _Shape:
    """The simulated payload at one position: a schema, expanded into members only when visited."""

    def __init__(self, schema: Any, root: Any, element: _Shape | None = None) -> None:
        self.schema, self.root, self.element = schema, root, element  # element: set by wrap
        self.facts = _facts(schema, root)
        self.children: dict[str, _Shape] = {}
        self.removed: set[str] = set()

    def may_be(self, kind: str) -> bool:
        return not self.facts.types or kind in self.facts.types

    def is_array(self) -> bool:
        return self.element is not None or "array" in self.facts.types

    def kind(self) -> str:
        return "array" if self.element is not None else " or ".join(sorted(self.facts.types)) or "anything"

    def child(self, path: tuple[str, ...]) -> _Shape:
        """The existing member or element at the end of ``path``; ``_ShapeError`` if there is none."""
        token, facts, here = path[-1], self.facts, json_pointer(path[:-1])
        if token in self.children:
            return self.children[token]
        if token in self.removed:
            raise _ShapeError(f"{json_pointer(path)} was removed or moved away by an earlier step")
        if self.is_array() and INDEX_RE.fullmatch(token):
            if self.element is not None:
                return self.element
            index = int(token)
            schema = facts.prefix[index] if index < len(facts.prefix) else facts.items
        elif facts.members is not None and token in facts.members:
            schema = facts.members[token]
        elif not self.may_be("object"):
            raise _ShapeError(f"{here} is {self.kind()}, not an object")
        elif facts.members is None or facts.extras:
            schema = None  # the schema does not describe this member: anything goes
        else:
            names = sorted((set(facts.members) - self.removed) | set(self.children))
            listed = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            raise _ShapeError(f"there is no {json_pointer(path)} at this step; fields at {here}: {listed}")
        self.children[token] = _Shape(schema, self.root)
        return self.children[token]

    def find(self, segments: tuple[str, ...]) -> _Shape:
        node = self
        for depth in range(len(segments)):
            node = node.child(segments[: depth + 1])
        return node

    def parent_for_write(self, segments: tuple[str, ...]) -> _Shape:
        """The container of the last segment, creating objects the way a write at runtime does."""
        node = self
        for depth in range(len(segments)):
            path = segments[: depth + 1]
            if not node.may_be("object") and not (node.is_array() and INDEX_RE.fullmatch(path[-1])):
                raise _ShapeError(
                    f"cannot write {json_pointer(segments)}: {json_pointer(path[:-1])} is {node.kind()}"
                )
            if depth == len(segments) - 1:
                return node
            try:
                node = node.child(path)
            except _ShapeError:  # absent: a write creates an empty object here
                node.removed.discard(path[-1])
                node.children[path[-1]] = node = _Shape({"type": "object"}, node.root)
        return node

    def put(self, segments: tuple[str, ...], shape: _Shape) -> None:
        parent = self.parent_for_write(segments)
        if parent.element is None:  # a wrapped list keeps one shape for all its elements
            parent.removed.discard(segments[-1])
            parent.children[segments[-1]] = shape

    def take(self, segments: tuple[str, ...]) -> _Shape:
        node = self.find(segments)
        parent = self.find(segments[:-1])
        if not parent.is_array() and segments[-1] in parent.children:  # other list elements remain
            del parent.children[segments[-1]]
            parent.removed.add(segments[-1])
        return node


def _check_step(shape: _Shape, target: _Shape, step: Step, limits: Limits) -> None:
    if isinstance(step, Rename):
        shape.put(split_pointer(step.to), shape.take(split_pointer(step.from_)))
        return
    segments = split_pointer(step.path)
    if isinstance(step, SetDefault):
        try:
            expected: Any = target.find(segments).schema
        except _ShapeError:
            expected = None
        if isinstance(expected, dict | bool):
            validator = compile_validator(json.dumps(target.root)).evolve(schema=expected)
            try:
                validate_payload(validator, step.value, limits)
            except PayloadInvalid as exc:
                found = "; ".join(f"{e['path']}: {e['message']}" for e in exc.details.get("errors", []))
                raise _ShapeError(f"the value does not match the target schema there: {found}") from None
        try:
            shape.find(segments)
        except _ShapeError:
            shape.put(segments, _Shape(expected, target.root))
        return
    if isinstance(step, Remove):
        shape.take(segments)
        return
    node = shape.find(segments)
    if isinstance(step, MapValues):
        if not node.may_be("string") or node.element is not None:
            raise _ShapeError(f"the source schema says {step.path} is {node.kind()}; only strings are mapped")
    elif isinstance(step, Wrap):
        if node.element is not None or node.facts.types == {"array"}:
            raise _ShapeError(f"{step.path} is already a list; wrap would do nothing")
        shape.put(segments, _Shape({"type": "array"}, node.root, element=node))
    else:
        if node.element is None and not node.may_be("array"):
            raise _ShapeError(f"{step.path} is {node.kind()}, not a list; unwrap would do nothing")
        shape.put(segments, node.element or (node.child((*segments, "0")) if node.is_array() else node))


def check_adapter(
    steps: Sequence[Step],
    source_schema: dict[str, Any],
    target_schema: dict[str, Any],
    limits: Limits | None = None,
) -> None:
    """Refuse (``InvalidAdapter``, naming the step) steps that do not fit the source schema's shape.

    The shape is simulated step by step: a path a step reads must exist at that point, a write may
    not go below a value the schema says is not an object, and a ``set_default`` value must match
    the target schema where it lands. Where a schema declares no properties, any name is accepted;
    where it declares some, others only if ``additionalProperties`` or ``patternProperties`` allow them.
    """
    if len(steps) > MAX_STEPS:
        raise InvalidAdapter(f"an adapter has at most {MAX_STEPS} steps; got {len(steps)}")
    shape, target = _Shape(source_schema, source_schema), _Shape(target_schema, target_schema)
    for index, step in enumerate(steps):
        try:
            _check_step(shape, target, step, limits or Limits())
        except _ShapeError as exc:
            raise InvalidAdapter(f"steps[{index}] ({describe(step)}): {exc}", step=index) from None


# --- finding a path of adapters ----------------------------------------------------------------
