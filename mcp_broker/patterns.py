"""Regular expressions from schemas: priced before they are compiled, and cached by what they cost.

The ``regex`` module unrolls a counted repetition when it compiles it: ``a{3000000}`` takes seconds
and hundreds of megabytes, ``(?:a{60000}){60000}`` all the memory there is. So a pattern is parsed
first and refused when it is too long, when one repetition count is too high, when nested counts
multiply past a bound, or when the whole pattern, every repetition expanded, is too big. What passes
compiles in milliseconds to at most a few megabytes, and the cache of compiled patterns is bounded
by the sum of their sizes, not by their number.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import regex

# The regex module's own parser, a private API: it is the only way to see a pattern's repetition counts
# exactly as its compiler will, without compiling (which is the costly step). Used here and nowhere else;
# a change in the module fails tests/test_schemas.py loudly instead of passing bombs through.
from regex import _regex_core as _core


@dataclass(frozen=True)
class PatternLimits:
    """What one pattern may cost; the defaults fit every pattern seen in real schemas many times over."""

    max_chars: int = 1000
    max_repeat: int = 10_000  # any one count, and counts nested inside each other multiplied
    max_size: int = 20_000  # elements once every repetition is expanded to its larger bound


class CostlyPattern(ValueError):
    """A pattern that is refused before compiling; the message says which bound it passes."""


def _parse(pattern: str) -> _core.RegexBase:
    source = _core.Source(pattern)
    info = _core.Info(0, source.char_type, {})
    while True:  # a global flag such as (?x) met mid-pattern restarts the parse, as regex.compile does
        source.ignore_space = bool(info.flags & _core.VERBOSE)
        try:
            return _core._parse_pattern(source, info)
        except _core._UnscopedFlagSet:
            source = _core.Source(pattern)
            info = _core.Info(info.global_flags, source.char_type, {})


def _children(node: _core.RegexBase) -> list[_core.RegexBase]:
    if isinstance(node, _core.SetBase):  # a character set is one element, however it is spelled
        return []
    found: list[_core.RegexBase] = []
    for value in vars(node).values():
        if isinstance(value, _core.RegexBase):
            found.append(value)
        elif isinstance(value, list | tuple):
            found.extend(item for item in value if isinstance(item, _core.RegexBase))
    return found


def pattern_size(pattern: str, limits: PatternLimits = PatternLimits()) -> int:
    """The expanded size of ``pattern``; ``CostlyPattern`` if over a limit, ``regex.error`` if invalid."""
    if len(pattern) > limits.max_chars:
        raise CostlyPattern(f"the pattern is {len(pattern)} characters long; at most {limits.max_chars}")
    try:
        root = _parse(pattern)
    except RecursionError:
        raise CostlyPattern("the pattern nests groups too deeply") from None
    # Post-order without recursion: (node, children done?) pairs; sizes and products by node id.
    size: dict[int, int] = {}
    product: dict[int, int] = {}
    stack: list[tuple[_core.RegexBase, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        children = _children(node)
        if not done:
            stack.append((node, True))
            stack.extend((child, False) for child in children)
            continue
        own = len(getattr(node, "characters", ())) or 1
        inner = sum(size[id(child)] for child in children)
        deepest = max((product[id(child)] for child in children), default=1)
        if isinstance(node, _core.GreedyRepeat):  # lazy and possessive repeats are subclasses
            counts = [c for c in (node.min_count, node.max_count) if c is not None]
            count = max(counts)
            if count > limits.max_repeat:
                raise CostlyPattern(f"a repetition count of {count} is over the limit of {limits.max_repeat}")
            deepest *= max(count, 1)
            if deepest > limits.max_repeat:
                raise CostlyPattern(
                    f"nested repetitions multiply to {deepest}, over the limit of {limits.max_repeat}"
                )
            inner *= max(count, 1)
        size[id(node)] = inner if children else own
        product[id(node)] = deepest
        if size[id(node)] > limits.max_size:
            raise CostlyPattern(
                f"expanded, the pattern has more than {limits.max_size} elements; use fewer or smaller "
                "repetition counts (minLength/maxLength bound a length without a regex)"
            )
    return size[id(root)]


class PatternCache:
    """Compiled patterns, least recently used dropped when their sizes add up past ``max_total``."""

    def __init__(self, max_total: int = 200_000, limits: PatternLimits = PatternLimits()) -> None:
        self._max_total = max_total
        self._limits = limits
        self._entries: OrderedDict[str, tuple[int, regex.Pattern[str]]] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()  # validation may run in worker threads

    def get(self, pattern: str) -> regex.Pattern[str]:
        """The compiled ``pattern``; raises ``CostlyPattern`` or ``regex.error`` as :func:`pattern_size`."""
        with self._lock:
            entry = self._entries.get(pattern)
            if entry is not None:
                self._entries.move_to_end(pattern)
                return entry[1]
        # Checked at every compile, not only at registration: a schema stored by an older version is
        # compiled on its first use, and must not bring down the process either.
        size = pattern_size(pattern, self._limits)
        compiled = regex.compile(pattern, cache_pattern=False)  # the module's own cache is unbounded in size
        with self._lock:
            if pattern not in self._entries:
                self._entries[pattern] = (size, compiled)
                self._total += size
            while self._total > self._max_total and len(self._entries) > 1:
                self._total -= self._entries.popitem(last=False)[1][0]
        return compiled

    @property
    def total(self) -> int:
        """The summed sizes of the cached patterns."""
        return self._total

    def __len__(self) -> int:
        return len(self._entries)
