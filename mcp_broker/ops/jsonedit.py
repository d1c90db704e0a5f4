"""Edit one member of a JSON document and keep every other byte of it.

Hosts keep their MCP servers in JSON files that people also edit by hand (VS Code's ``mcp.json`` may even hold
comments and trailing commas). Loading and re-dumping such a file would reformat it and drop the comments, so
this module parses the text into a tree of spans and splices the change into the original text instead.

The parser accepts JSON plus ``//`` and ``/* */`` comments and trailing commas (what VS Code calls JSONC).
Callers check the result with :func:`loads` against the value they meant to produce.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"')
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")


@dataclass
class Node:
    """One JSON value: its kind, where its text starts and ends, and its children."""

    kind: str  # "object", "array" or "scalar"
    start: int
    end: int
    keys: list[str] = field(default_factory=list)  # objects: member names, in order
    key_starts: list[int] = field(default_factory=list)  # objects: where each member's name begins
    children: list[Node] = field(default_factory=list)  # member values, or array items

    def member(self, key: str) -> int | None:
        """Index of the member named ``key`` (the last one, as JSON readers take the last duplicate)."""
        for index in range(len(self.keys) - 1, -1, -1):
            if self.keys[index] == key:
                return index
        return None

    def item_start(self, index: int) -> int:
        return self.key_starts[index] if self.kind == "object" else self.children[index].start


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> ValueError:
        line = self.text.count("\n", 0, self.pos) + 1
        column = self.pos - (self.text.rfind("\n", 0, self.pos) + 1) + 1
        return ValueError(f"{what} at line {line} column {column}")

    def skip(self) -> None:
        """Skip whitespace and comments."""
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t\r\n\ufeff":
                self.pos += 1
            elif text.startswith("//", self.pos):
                newline = text.find("\n", self.pos)
                self.pos = len(text) if newline < 0 else newline + 1
            elif text.startswith("/*", self.pos):
                close = text.find("*/", self.pos + 2)
                if close < 0:
                    raise self.fail("unterminated comment")
                self.pos = close + 2
            else:
                return

    def value(self, depth: int = 0) -> Node:
        if depth > 200:
            raise self.fail("nesting too deep")
        self.skip()
        if self.pos >= len(self.text):
            raise self.fail("value expected")
        char = self.text[self.pos]
        if char in "{[":
            return self.container(depth)
        match = (_STRING if char == '"' else _SCALAR).match(self.text, self.pos)
        if match is None:
            raise self.fail("invalid value")
        self.pos = match.end()
        return Node("scalar", match.start(), match.end())

    def container(self, depth: int) -> Node:
        is_object = self.text[self.pos] == "{"
        node = Node("object" if is_object else "array", self.pos, -1)
        close = "}" if is_object else "]"
        self.pos += 1
        while True:
            self.skip()
            if self.text.startswith(close, self.pos):
                self.pos += 1
                node.end = self.pos
                return node
            if is_object:
                match = _STRING.match(self.text, self.pos)
                if match is None:
                    raise self.fail("member name expected")
                node.keys.append(json.loads(match.group()))
                node.key_starts.append(match.start())
                self.pos = match.end()
                self.skip()
                if not self.text.startswith(":", self.pos):
                    raise self.fail("':' expected")
                self.pos += 1
            node.children.append(self.value(depth + 1))
            self.skip()
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif not self.text.startswith(close, self.pos):
                raise self.fail(f"',' or '{close}' expected")


def parse(text: str) -> Node:
    """The tree of the document's root value; ``ValueError`` (with line and column) if it is not JSON(C)."""
    parser = _Parser(text)
    root = parser.value()
    parser.skip()
    if parser.pos != len(text):
        raise parser.fail("unexpected text after the document")
    return root


def value_of(text: str, node: Node) -> Any:
    if node.kind == "scalar":
        return json.loads(text[node.start : node.end])
    if node.kind == "array":
        return [value_of(text, child) for child in node.children]
    return {key: value_of(text, child) for key, child in zip(node.keys, node.children, strict=True)}


def loads(text: str) -> Any:
    """The document's value, comments and trailing commas allowed."""
    return value_of(text, parse(text))


def find(root: Node, path: Sequence[str]) -> tuple[Node, int]:
    """The deepest object on ``path`` that exists, and how many path steps it covers."""
    node = root
    for depth, key in enumerate(path):
        index = node.member(key) if node.kind == "object" else None
        if index is None:
            return node, depth
        child = node.children[index]
        if child.kind != "object" and depth < len(path) - 1:
            raise ValueError(f"{'.'.join(path[: depth + 1])} is not an object")
        node = child
    return node, len(path)


def _line_indent(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    line = text[start:pos]
    return line[: len(line) - len(line.lstrip(" \t"))]


def indent_unit(text: str) -> str:
    """The document's indentation step: the first indented line's leading whitespace, else two spaces."""
    match = re.search(r"\n([ \t]+)\S", text)
    return match.group(1) if match else "  "


def render(value: Any, unit: str, base: str) -> str:
    """``value`` as JSON text laid out with ``unit`` per level, continuing lines at ``base``."""
    dumped = json.dumps(value, indent=unit, ensure_ascii=False)
    return dumped.replace("\n", "\n" + base)


def _member_text(node: Node, key: str | None, rendered: str) -> str:
    return f"{json.dumps(key, ensure_ascii=False)}: {rendered}" if node.kind == "object" else rendered


def insert(text: str, node: Node, key: str | None, value: Any) -> str:
    """Add a member (objects, ``key`` given) or an item (arrays) at the end of ``node``."""
    unit = indent_unit(text)
    base = _line_indent(text, node.start)
    inner = text[node.start + 1 : node.end - 1]
    if not node.children:
        indent = base + unit
        piece = _member_text(node, key, render(value, unit, indent))
        if inner.strip():  # only comments inside: keep them, add after
            return f"{text[: node.end - 1].rstrip()}\n{indent}{piece}\n{base}{text[node.end - 1 :]}"
        return f"{text[: node.start + 1]}\n{indent}{piece}\n{base}{text[node.end - 1 :]}"
    first = node.item_start(0)
    last = node.children[-1]
    if "\n" not in text[node.start : node.end]:  # a one-line container stays on one line
        piece = _member_text(node, key, json.dumps(value, ensure_ascii=False))
        return f"{text[: last.end]}, {piece}{text[last.end :]}"
    indent = _line_indent(text, first) if "\n" in text[node.start : first] else base + unit
    piece = _member_text(node, key, render(value, unit, indent))
    return f"{text[: last.end]},\n{indent}{piece}{text[last.end :]}"


def replace(text: str, node: Node, value: Any) -> str:
    """Put ``value`` where ``node`` is, laid out like the surrounding text."""
    one_line = "\n" not in text[node.start : node.end] and node.kind == "scalar"
    rendered = (
        json.dumps(value, ensure_ascii=False)
        if one_line
        else render(value, indent_unit(text), _line_indent(text, node.start))
    )
    return text[: node.start] + rendered + text[node.end :]


def remove(text: str, node: Node, index: int) -> str:
    """Take member or item ``index`` out of ``node`` with its comma; the neighbours keep their layout."""
    count = len(node.children)
    start = node.item_start(index)
    if count == 1:
        inner = text[node.start + 1 : node.end - 1]
        before, after = inner[: start - node.start - 1], inner[node.children[0].end - node.start - 1 :]
        if not (before + after).replace(",", "").strip():
            return text[: node.start + 1] + text[node.end - 1 :]
        end = node.children[0].end
        comma = re.match(r"\s*,", text[end:])  # a trailing comma would now follow nothing
        return text[:start] + text[end + (comma.end() if comma else 0) :]
    if index < count - 1:
        return text[:start] + text[node.item_start(index + 1) :]
    return text[: node.children[index - 1].end] + text[node.children[index].end :]
