"""Version adapters: declarative steps that turn a payload of one protocol version into another.

An adapter is a list of steps, each addressing a field by JSON Pointer (RFC 6901). Nothing here
runs user code, touches storage or does I/O: steps are parsed and checked against the two schemas
when an adapter is registered, applied to copies of payloads on delivery, and chained along the
shortest path of adapters between two versions.

Step semantics, the same for every payload:

* ``rename {from, to}`` moves a value between any two pointers; the source is removed before the
  target is written, so ``/a`` → ``/a/b`` nests a value and ``/a/b`` → ``/a`` lifts one out.
  Missing objects on the target side are created; an existing target is overwritten. An absent
  source does nothing.
* ``set_default {path, value}`` writes ``value`` only where nothing is (``null`` counts as present).
* ``remove {path}`` deletes the field, if there is one.
* ``map_values {path, mapping}`` replaces a string found in ``mapping``; other values stay.
* ``wrap {path}`` turns any value that is not a list into a one-element list.
* ``unwrap {path}`` turns a one-element list into its element and an empty list into an absent
  field; a longer list fails the transformation, a value that is not a list stays.

A pointer segment addresses an array element when the value there is a list: an existing index
reads, replaces or removes (later elements shift); writing at the index one past the end appends.
"""

from __future__ import annotations

import copy
import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mcp_broker.errors import (
    InvalidAdapter,
    InvalidArgument,
    PayloadInvalid,
    TooLarge,
    TransformFailed,
    excerpt,
)
from mcp_broker.schemas import Limits, check_json_value, compile_validator, json_pointer, validate_payload
from mcp_broker.versions import version_key

MAX_STEPS = 64
MAX_HOPS = 8  # adapters chained on one delivery: routes longer than this are not taken
MAX_PATH_STEPS = MAX_STEPS * MAX_HOPS  # steps applied to one payload along a route
POINTER_MAX_CHARS = 1000
POINTER_MAX_SEGMENTS = 64
_INDEX_RE = re.compile(r"0|[1-9][0-9]{0,8}")
_BAD_ESCAPE_RE = re.compile(r"~(?![01])")

Edge = tuple[str, str]


# --- steps -------------------------------------------------------------------------------------


def split_pointer(pointer: str) -> tuple[str, ...]:
    """The unescaped segments of a JSON Pointer (``~1`` is ``/``, ``~0`` is ``~``); root refused."""
    if pointer == "":
        raise ValueError("the root pointer '' cannot be a step's target; name a field such as '/text'")
    if not pointer.startswith("/"):
        raise ValueError(f"{pointer[:40]!r} is not a JSON Pointer; start it with '/', such as '/text'")
    if len(pointer) > POINTER_MAX_CHARS:
        raise ValueError(
            f"pointer is {len(pointer)} characters long; at most {POINTER_MAX_CHARS} are allowed"
        )
    if _BAD_ESCAPE_RE.search(pointer):
        raise ValueError(f"{pointer[:40]!r}: '~' must be written '~0' and '/' inside a name '~1'")
    segments = tuple(s.replace("~1", "/").replace("~0", "~") for s in pointer[1:].split("/"))
    if len(segments) > POINTER_MAX_SEGMENTS:
        raise ValueError(f"pointer has {len(segments)} segments; at most {POINTER_MAX_SEGMENTS} are allowed")
    return segments


def _check_pointer(pointer: str) -> str:
    split_pointer(pointer)
    return pointer


Pointer = Annotated[str, AfterValidator(_check_pointer)]


class _Step(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", serialize_by_alias=True, validate_by_name=True, validate_by_alias=True
    )


class Rename(_Step):
    """Move the value at ``from`` to ``to``."""

    op: Literal["rename"] = "rename"
    from_: Pointer = Field(alias="from")
    to: Pointer


class SetDefault(_Step):
    """Write ``value`` at ``path`` when nothing is there."""

    op: Literal["set_default"] = "set_default"
    path: Pointer
    value: Any


class Remove(_Step):
    """Delete the field at ``path`` if present."""

    op: Literal["remove"] = "remove"
    path: Pointer


class MapValues(_Step):
    """Replace the string at ``path`` by ``mapping[string]`` when it is a key of ``mapping``."""

    op: Literal["map_values"] = "map_values"
    path: Pointer
    mapping: dict[str, Any] = Field(min_length=1)


class Wrap(_Step):
    """Turn the value at ``path`` into a one-element list unless it already is a list."""

    op: Literal["wrap"] = "wrap"
    path: Pointer


class Unwrap(_Step):
    """Turn a one-element list at ``path`` into its element (an empty list removes the field)."""

    op: Literal["unwrap"] = "unwrap"
    path: Pointer


Step = Annotated[Rename | SetDefault | Remove | MapValues | Wrap | Unwrap, Field(discriminator="op")]
_STEP: TypeAdapter[Step] = TypeAdapter(Step)
OPS = ("rename", "set_default", "remove", "map_values", "wrap", "unwrap")


def describe(step: Step) -> str:
    """A short label for messages: ``rename /text -> /body``."""
    return f"{step.op} {step.from_} -> {step.to}" if isinstance(step, Rename) else f"{step.op} {step.path}"


def parse_steps(raw: Any) -> list[Step]:
    """Parse the ``steps`` argument; a malformed step raises ``InvalidArgument`` naming its index."""
    if not isinstance(raw, list):
        raise InvalidArgument(f"steps must be a list of steps, not {type(raw).__name__}")
    if len(raw) > MAX_STEPS:
        raise InvalidArgument(f"an adapter has at most {MAX_STEPS} steps; got {len(raw)}")
    steps: list[Step] = []
    for index, item in enumerate(raw):
        if isinstance(item, dict) and item.get("op") not in OPS:
            # Checked here, not by pydantic: its message for a bad tag quotes the whole value.
            found = f"got {excerpt(item['op'])}" if "op" in item else "it has none"
            raise InvalidArgument(f"steps[{index}].op must be one of {', '.join(OPS)}; {found}", step=index)
        try:
            steps.append(_STEP.validate_python(item))
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = "".join(f".{_label(part)}" for part in first["loc"][1:])  # loc[0] is the op tag
            message = first["msg"].removeprefix("Value error, ")[:200]
            raise InvalidArgument(f"steps[{index}]{where}: {message}", step=index) from None
    return steps


def _label(part: str | int) -> str | int:
    """A field name as it goes into a message: as is when it is a short name, else an excerpt."""
    return part if isinstance(part, int) or (part.isidentifier() and len(part) <= 40) else excerpt(part, 40)


def dump_steps(steps: Iterable[Step]) -> list[dict[str, Any]]:
    """Steps as the JSON the tool accepts (``from``, not ``from_``), for storage and listings."""
    return [step.model_dump(mode="json") for step in steps]


# --- applying steps ----------------------------------------------------------------------------


def _kind(value: Any) -> str:
    """How a JSON value is named in messages."""
    if isinstance(value, list):
        return f"a list of {len(value)} elements"
    names = {dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _index(token: str, container: list[Any], *, append: bool = False) -> int | None:
    if not _INDEX_RE.fullmatch(token):
        return None
    index = int(token)
    return index if index < len(container) + (1 if append else 0) else None


def _parent(doc: Any, segments: tuple[str, ...], *, create: bool) -> Any:
    """The container of the last segment; ``None`` if a parent is absent and ``create`` is false."""
    node = doc
    for depth, token in enumerate(segments[:-1]):
        if isinstance(node, dict):
            if token not in node and create:
                node[token] = {}
            node = node.get(token)
            continue
        index = _index(token, node) if isinstance(node, list) else None
        if index is not None:
            node = node[index]
        elif create:
            where = json_pointer(segments[: depth + 1])
            raise TransformFailed(f"cannot create {where}: its parent is {_kind(node)}")
        else:
            return None
    return node


def _locate(doc: Any, segments: tuple[str, ...]) -> tuple[Any, Any] | None:
    """The container and key (or index) of an existing value; ``None`` when nothing is there."""
    parent, last = _parent(doc, segments, create=False), segments[-1]
    if isinstance(parent, dict):
        return (parent, last) if last in parent else None
    index = _index(last, parent) if isinstance(parent, list) else None
    return None if index is None else (parent, index)


def _write(doc: Any, segments: tuple[str, ...], value: Any) -> None:
    parent = _parent(doc, segments, create=True)
    if isinstance(parent, dict):
        parent[segments[-1]] = value
        return
    index = _index(segments[-1], parent, append=True) if isinstance(parent, list) else None
    if index is None:
        raise TransformFailed(f"cannot create {json_pointer(segments)}: its parent is {_kind(parent)}")
    parent[index : index + 1] = [value]


def _apply(doc: Any, step: Step) -> None:
    """Apply one step to ``doc`` in place (the root itself is never a target, so ``doc`` stays)."""
    if isinstance(step, Rename):
        if place := _locate(doc, split_pointer(step.from_)):
            _write(doc, split_pointer(step.to), place[0].pop(place[1]))
        return
    segments = split_pointer(step.path)
    place = _locate(doc, segments)
    if isinstance(step, SetDefault):
        if place is None:
            _write(doc, segments, copy.deepcopy(step.value))
        return
    if place is None:
        return
    container, key = place
    value = container[key]
    if isinstance(step, Remove):
        container.pop(key)
    elif isinstance(step, MapValues):
        if isinstance(value, str) and value in step.mapping:
            container[key] = copy.deepcopy(step.mapping[value])
    elif isinstance(step, Wrap):
        if not isinstance(value, list):
            container[key] = [value]
    elif isinstance(value, list):  # unwrap
        if len(value) > 1:
            raise TransformFailed(f"the list has {len(value)} elements; only a one-element list unwraps")
        if value:
            container[key] = value[0]
        else:
            container.pop(key)


def _run(doc: Any, steps: Sequence[Step]) -> Any:
    for index, step in enumerate(steps):
        try:
            _apply(doc, step)
        except TransformFailed as exc:
            raise TransformFailed(f"steps[{index}] ({describe(step)}): {exc.message}", step=index) from None
    return doc


def apply_steps(payload: Any, steps: Sequence[Step]) -> Any:
    """A transformed copy of ``payload``; the input is never changed. Raises ``TransformFailed``."""
    return _run(copy.deepcopy(payload), steps)


def transform(
    payload: Any,
    path_steps: Sequence[Sequence[Step]],
    labels: Sequence[str] = (),
    limits: Limits | None = None,
) -> Any:
    """Apply adapters one after another (a path from :func:`find_path`); ``labels`` name them in errors.

    The cost is bounded: at most ``MAX_HOPS`` adapters and ``MAX_PATH_STEPS`` steps, and after each adapter
    the payload must still fit the payload limits (a ``set_default`` value or a ``rename`` into a deep
    pointer can grow it), so a chain of adapters can never build something huge on the way.
    """
    limits = limits or Limits()
    total = sum(len(steps) for steps in path_steps)
    if len(path_steps) > MAX_HOPS or total > MAX_PATH_STEPS:
        raise TransformFailed(
            f"the route chains {len(path_steps)} adapters ({total} steps); at most {MAX_HOPS} adapters and "
            f"{MAX_PATH_STEPS} steps are applied to one payload: register a more direct adapter"
        )
    doc = copy.deepcopy(payload)
    for hop, steps in enumerate(path_steps):
        label = labels[hop] if hop < len(labels) else f"{hop + 1} of {len(path_steps)}"
        try:
            _run(doc, steps)
            check_json_value(
                doc,
                what="the adapted payload",
                max_bytes=limits.max_payload_bytes,
                max_depth=limits.max_depth,
            )
        except (TransformFailed, TooLarge) as exc:
            raise TransformFailed(f"adapter {label}: {exc.message}", hop=hop, **exc.details) from None
    return doc


# --- checking an adapter against the schemas ---------------------------------------------------


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
        elif isinstance(node, list) and _INDEX_RE.fullmatch(token) and int(token) < len(node):
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
        if self.is_array() and _INDEX_RE.fullmatch(token):
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
            if not node.may_be("object") and not (node.is_array() and _INDEX_RE.fullmatch(path[-1])):
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


def reachable(edges: Iterable[Edge], start: str) -> dict[str, list[Edge]]:
    """Every version reachable from ``start`` in at most ``MAX_HOPS`` adapters (itself included, by ``[]``),
    with a shortest path to it."""
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        if source != target:
            graph.setdefault(source, set()).add(target)
    paths: dict[str, list[Edge]] = {start: []}
    queue = deque([start])
    while queue:  # breadth first: the first path found to a version is a shortest one
        here = queue.popleft()
        if len(paths[here]) >= MAX_HOPS:
            continue  # a route is never longer than MAX_HOPS adapters
        for there in sorted(graph.get(here, ()), key=version_key, reverse=True):  # ties: newer first
            if there not in paths:
                paths[there] = [*paths[here], (here, there)]
                queue.append(there)
    return paths


def find_path(edges: Iterable[Edge], start: str, accepts: Callable[[str], bool]) -> list[Edge] | None:
    """The adapters from ``start`` to a version ``accepts`` allows: fewest hops, then newest target.

    ``[]`` when ``start`` itself is accepted, ``None`` when no chain of adapters leads anywhere accepted.
    """
    if accepts(start):
        return []
    found = [
        (version, path) for version, path in reachable(edges, start).items() if path and accepts(version)
    ]
    if not found:
        return None
    fewest = min(len(path) for _, path in found)
    return max(((v, p) for v, p in found if len(p) == fewest), key=lambda item: version_key(item[0]))[1]
