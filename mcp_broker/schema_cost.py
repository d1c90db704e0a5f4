"""What validating one payload against a schema can cost, bounded before the schema is accepted.

A validator applies a schema's subschemas to each value of a payload, and does not remember what it
already applied: ``{"allOf": [{"$ref": "#/$defs/b"}, {"$ref": "#/$defs/b"}]}`` applies ``b`` twice,
and twenty levels of that apply the last one a million times, to every value. So the subschemas are
read as a graph before a schema is stored: edges that apply to the same value (``$ref``, ``allOf``,
``anyOf``, ``oneOf``, ``not``, ``if``/``then``/``else``, ``dependentSchemas``) and edges that apply to
a member or an element (``properties``, ``items``, ...). From it comes an upper bound on how many
subschemas can be applied to any one value of a payload, at each nesting depth; the schema is refused
when that bound, its size, its ``$ref`` count or the length of a ``$ref`` chain passes a limit.

A cycle through same-value edges only (``{"$ref": "#"}``) would recurse for ever: it is refused too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import referencing.jsonschema
from referencing import Registry
from referencing.exceptions import Unresolvable


@dataclass(frozen=True)
class CostLimits:
    """Bounds on a schema's shape and on the validation work it can ask for."""

    max_subschemas: int = 4096
    max_refs: int = 1000  # $ref, $dynamicRef and $recursiveRef keywords
    max_ref_chain: int = 32  # $refs followed one after another without descending into the payload
    max_enum: int = 1000  # values in one enum
    max_visits: int = 1000  # subschemas applied to one payload value, all paths through the schema counted


class CostlySchema(ValueError):
    """The schema is refused; ``path`` is where (a tuple of keys), the message says why."""

    def __init__(self, message: str, path: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


_SAME_VALUE_ONE = ("not", "if", "then", "else")
_SAME_VALUE_MANY = ("allOf", "anyOf", "oneOf")
_SAME_VALUE_MAP = ("dependentSchemas", "dependencies")  # "dependencies": values that are schemas only
_REFS = ("$ref", "$dynamicRef", "$recursiveRef")
_CONTAINERS = ("$defs", "definitions")  # hold subschemas without applying them


@dataclass
class _Node:
    """One subschema's edges, each a list of node ids."""

    same: list[tuple[int, bool]] = field(default_factory=list)  # (child, through a $ref?)
    dynamic: list[list[int]] = field(default_factory=list)  # each $dynamicRef: one of these applies
    members: list[int] = field(default_factory=list)  # properties: one of them applies to a member
    other_members: list[int] = field(default_factory=list)  # additionalProperties
    every_member: list[int] = field(default_factory=list)  # patternProperties, unevaluatedProperties
    elements: list[int] = field(default_factory=list)  # prefixItems, items, additionalItems: one applies
    every_element: list[int] = field(default_factory=list)  # contains, unevaluatedItems
    keys: list[int] = field(default_factory=list)  # propertyNames: applied to the member names
    twice: bool = False  # unevaluated*: the validator walks the same-value subschemas a second time


def _schemas_in(node: dict[str, Any], keyword: str) -> list[tuple[Any, tuple[Any, ...]]]:
    """The subschemas under ``keyword`` of ``node``, each with its path below ``node``."""
    value = node.get(keyword)
    if isinstance(value, dict) and keyword in (
        *_CONTAINERS,
        *_SAME_VALUE_MAP,
        "properties",
        "patternProperties",
    ):
        return [(v, (keyword, k)) for k, v in value.items() if isinstance(v, dict | bool)]
    if isinstance(value, list) and keyword in (*_SAME_VALUE_MANY, "prefixItems", "items"):
        return [(v, (keyword, i)) for i, v in enumerate(value) if isinstance(v, dict | bool)]
    if isinstance(value, dict | bool) and keyword not in (*_CONTAINERS, *_SAME_VALUE_MAP, "properties"):
        return [(value, (keyword,))]
    return []


class _Graph:
    def __init__(self, limits: CostLimits) -> None:
        self.limits = limits
        self.nodes: dict[int, _Node] = {}
        self.paths: dict[int, tuple[Any, ...]] = {}
        self.refs = 0
        self.dynamic: list[tuple[int, str]] = []  # ($dynamicRef node, anchor name)
        self.recursive: list[int] = []  # $recursiveRef nodes
        self.anchors: dict[str, list[int]] = {}  # $dynamicAnchor name -> nodes
        self.recursive_anchors: list[int] = []

    def build(self, schema: dict[str, Any], draft: Any) -> None:
        # Long on purpose: one walk over the schema without recursion (hostile schemas nest deep);
        # each node's references, anchors and subschemas are handled where the walk holds its resolver.
        spec = referencing.jsonschema.specification_with(draft.ID_OF(draft.META_SCHEMA))
        root = spec.create_resource(schema)
        registry = Registry().with_resource(root.id() or "", root).crawl()
        stack: list[tuple[Any, tuple[Any, ...], Any]] = [(schema, (), registry.resolver(root.id() or ""))]
        while stack:
            node, path, resolver = stack.pop()
            if id(node) in self.nodes:
                continue
            self.nodes[id(node)] = edges = _Node()
            self.paths[id(node)] = path
            if len(self.nodes) > self.limits.max_subschemas:
                raise CostlySchema(f"the schema has more than {self.limits.max_subschemas} subschemas", path)
            if not isinstance(node, dict):
                continue  # true / false
            if path and ("$id" in node or "id" in node):
                with contextlib.suppress(AttributeError, TypeError):  # "id" was a property name
                    resolver = resolver.in_subresource(spec.create_resource(node))
            self._check_values(node, path)
            children: list[tuple[Any, tuple[Any, ...], Any]] = []
            for keyword in _REFS:
                if not isinstance(node.get(keyword), str):
                    continue
                self.refs += 1
                if self.refs > self.limits.max_refs:
                    raise CostlySchema(
                        f"the schema has more than {self.limits.max_refs} references ($ref)", path
                    )
                try:
                    resolved = resolver.lookup(node[keyword])
                except Unresolvable:
                    continue  # refused elsewhere, with a better message
                children.append((resolved.contents, (*path, keyword), resolved.resolver))
                if keyword == "$ref":
                    edges.same.append((id(resolved.contents), True))
                    continue
                # Resolved at validation time to this target or to a dynamic anchor: one of them applies.
                edges.dynamic.append([id(resolved.contents)])
                if keyword == "$dynamicRef":
                    self.dynamic.append((id(node), node[keyword].rpartition("#")[2]))
                else:
                    self.recursive.append(id(node))
            if isinstance(node.get("$dynamicAnchor"), str):
                self.anchors.setdefault(node["$dynamicAnchor"], []).append(id(node))
            if node.get("$recursiveAnchor") is True:
                self.recursive_anchors.append(id(node))
            for keyword, into in self._slots(node, edges):
                for child, where in _schemas_in(node, keyword):
                    if into is not None:
                        into.append(id(child))
                    children.append((child, (*path, *where), resolver))
            for child, where in [
                c
                for k in (*_SAME_VALUE_ONE, *_SAME_VALUE_MANY, *_SAME_VALUE_MAP)
                for c in _schemas_in(node, k)
            ]:
                edges.same.append((id(child), False))
                children.append((child, (*path, *where), resolver))
            edges.twice = "unevaluatedProperties" in node or "unevaluatedItems" in node
            stack.extend(children)
        for source, name in self.dynamic:
            self.nodes[source].dynamic[0].extend(self.anchors.get(name, ()))
        for source in self.recursive:
            self.nodes[source].dynamic[-1].extend(self.recursive_anchors)

    def same_value(self, here: int) -> list[tuple[int, bool]]:
        """Every child applied to the same value as ``here`` (for cycles and chains), with its $ref flag."""
        node = self.nodes[here]
        return [*node.same, *((c, True) for choice in node.dynamic for c in choice)]

    @staticmethod
    def _slots(node: dict[str, Any], edges: _Node) -> list[tuple[str, list[int] | None]]:
        tuple_items = isinstance(node.get("items"), list)  # drafts before 2020-12: items as prefixItems
        return [
            ("$defs", None),
            ("definitions", None),
            ("properties", edges.members),
            ("additionalProperties", edges.other_members),
            ("patternProperties", edges.every_member),
            ("unevaluatedProperties", edges.every_member),
            ("prefixItems", edges.elements),
            ("items", edges.elements),
            ("additionalItems", edges.elements if tuple_items else None),
            ("contains", edges.every_element),
            ("unevaluatedItems", edges.every_element),
            ("propertyNames", edges.keys),
        ]

    def _check_values(self, node: dict[str, Any], path: tuple[Any, ...]) -> None:
        enum = node.get("enum")
        if isinstance(enum, list) and len(enum) > self.limits.max_enum:
            raise CostlySchema(
                f"enum has {len(enum)} values; at most {self.limits.max_enum}", (*path, "enum")
            )

    def order(self) -> list[int]:
        """Node ids with every same-value child before its parent; ``CostlySchema`` on a same-value cycle."""
        done: list[int] = []
        state: dict[int, int] = {}  # 1: on the current path, 2: done
        for start in self.nodes:
            if state.get(start):
                continue
            stack = [(start, 0)]
            state[start] = 1
            while stack:
                here, next_edge = stack[-1]
                same = self.same_value(here)
                if next_edge == len(same):
                    stack.pop()
                    state[here] = 2
                    done.append(here)
                    continue
                stack[-1] = (here, next_edge + 1)
                child = same[next_edge][0]
                if state.get(child) == 1:
                    raise CostlySchema(
                        "the schema refers to itself in a cycle ($ref loop) that never ends: the cycle "
                        "applies subschemas to the same value again and again",
                        self.paths.get(child, ()),
                    )
                if not state.get(child):
                    state[child] = 1
                    stack.append((child, 0))
        return done


_DATA = frozenset({"const", "enum", "default", "examples"})  # values, not subschemas


def check_size(schema: Any, limits: CostLimits = CostLimits()) -> None:
    """Refuse a schema with more objects than ``max_subschemas`` (data keywords aside), cheaply.

    Run before the meta-schema check, whose cost grows with every object it checks (seconds for a
    64 KiB schema of empty objects): only a schema that passes this is worth checking further.
    """
    count, stack = 0, [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            count += 1
            if count > limits.max_subschemas:
                raise CostlySchema(f"the schema has more than {limits.max_subschemas} subschemas")
            stack.extend(value for key, value in node.items() if key not in _DATA)
        elif isinstance(node, list):
            stack.extend(node)


def check_cost(schema: dict[str, Any], draft: Any, max_depth: int, limits: CostLimits = CostLimits()) -> int:
    """Refuse (``CostlySchema``) a schema whose validation can cost too much; return its visit bound.

    The bound is, over every nesting depth up to ``max_depth``, the most subschemas one payload value can
    have applied. It is an upper bound: a member gets the sum of every subschema that may apply to it.
    """
    graph = _Graph(limits)
    graph.build(schema, draft)
    order = graph.order()
    nodes = graph.nodes
    chain: dict[int, int] = {}
    for here in order:
        chain[here] = max((chain[c] + is_ref for c, is_ref in graph.same_value(here)), default=0)
        if chain[here] > limits.max_ref_chain:
            raise CostlySchema(
                f"a chain of {chain[here]} $refs follow one another; at most {limits.max_ref_chain}",
                graph.paths[here],
            )
    cap = limits.max_visits + 1  # past the limit, the exact count does not matter
    previous: dict[int, int] = {}
    worst = 0
    for depth in range(max_depth + 1):
        visits: dict[int, int] = {}
        for here in order:
            edges = nodes[here]
            inner = sum(visits[c] for c, _ in edges.same) + sum(
                max(visits[c] for c in x) for x in edges.dynamic
            )
            inner *= 2 if edges.twice else 1
            if depth == 0:
                below = 1
            else:
                below = max(
                    max((previous[c] for c in (*edges.members, *edges.other_members)), default=0)
                    + sum(previous[c] for c in edges.every_member),
                    max((previous[c] for c in edges.elements), default=0)
                    + sum(previous[c] for c in edges.every_element),
                    sum(previous[c] for c in edges.keys) if depth == 1 else 0,  # names are strings
                )
            visits[here] = min(cap, below + inner)
        root = visits[id(schema)]
        if root > limits.max_visits:
            where = "the top-level value" if depth == 0 else f"a value nested {depth} deep"
            raise CostlySchema(
                f"validating {where} of a payload can apply more than {limits.max_visits} subschemas "
                "(the same subschemas reached again and again through $ref, allOf, anyOf, oneOf...); "
                "refer to shared definitions fewer times on one path"
            )
        worst = max(worst, root)
        if visits == previous:
            break  # each depth depends only on the one before: nothing changes from here on
        previous = visits
    return worst


# --- the work one validation may do -------------------------------------------------------------


class OutOfBudget(Exception):
    """Raised, not yielded, when a validation has used its budget: inside ``not`` or ``anyOf`` a yielded
    error could turn into an acceptance."""


class _Budget:
    __slots__ = ("deadline", "left", "until_clock")

    def __init__(self, steps: int, seconds: float) -> None:
        self.left = steps
        self.deadline = time.monotonic() + seconds
        self.until_clock = _CLOCK_EVERY


_CLOCK_EVERY = 512  # steps between two looks at the clock: reading it costs more than a step
_WORK: ContextVar[_Budget | None] = ContextVar("mcp_broker_validation_work", default=None)


def spend(steps: int) -> None:
    """Count ``steps`` of work against the current validation's budget (none set: nothing counts)."""
    budget = _WORK.get()
    if budget is None:
        return
    budget.left -= steps
    budget.until_clock -= steps
    if budget.left < 0:
        raise OutOfBudget("steps")
    if budget.until_clock <= 0:
        budget.until_clock = _CLOCK_EVERY
        if time.monotonic() > budget.deadline:
            raise OutOfBudget("seconds")


@contextmanager
def work_budget(steps: int, seconds: float) -> Iterator[None]:
    """Within this block, validation may take ``steps`` keyword applications and ``seconds``."""
    token = _WORK.set(_Budget(steps, seconds))
    try:
        yield
    finally:
        _WORK.reset(token)


def _size(value: Any) -> int:
    return len(value) if isinstance(value, list | dict) else 0


# One step is about what a simple keyword costs (2-3 µs here). Keywords whose work grows with the schema's
# value or with the instance weigh more, and so do references: jsonschema resolves one at each use (~40 µs).
_WEIGHT: dict[str, Callable[[Any, Any], int]] = {
    **dict.fromkeys(("$ref", "$dynamicRef", "$recursiveRef"), lambda value, instance: 15),
    **dict.fromkeys(
        ("required", "properties", "dependentRequired", "dependentSchemas", "dependencies"),
        lambda value, instance: _size(value),
    ),
    **dict.fromkeys(
        (
            "items",
            "prefixItems",
            "additionalItems",
            "contains",
            "unevaluatedItems",
            "additionalProperties",
            "unevaluatedProperties",
            "uniqueItems",
            "propertyNames",
        ),
        lambda value, instance: _size(instance),
    ),
    "enum": lambda value, instance: _size(value),
    "patternProperties": lambda value, instance: _size(value) * _size(instance),
}


def counted(keyword: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``keyword`` (a jsonschema keyword function) that first spends its work against the budget."""
    weight = _WEIGHT.get(name)
    if weight is not None:

        def weighed(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
            spend(1 + weight(value, instance))
            return keyword(validator, value, instance, schema)

        return weighed

    def step(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        spend(1)
        return keyword(validator, value, instance, schema)

    return step
