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
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mcp_broker.errors import (
    InvalidArgument,
    TooLarge,
    TransformFailed,
    excerpt,
)
from mcp_broker.schemas import Limits, check_json_value, json_pointer
from mcp_broker.versions import version_key

MAX_STEPS = 64
MAX_HOPS = 8  # adapters chained on one delivery: routes longer than this are not taken
MAX_PATH_STEPS = MAX_STEPS * MAX_HOPS  # steps applied to one payload along a route
POINTER_MAX_CHARS = 1000
POINTER_MAX_SEGMENTS = 64
INDEX_RE = re.compile(r"0|[1-9][0-9]{0,8}")
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
    if not INDEX_RE.fullmatch(token):
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
