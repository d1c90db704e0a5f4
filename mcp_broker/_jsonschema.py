"""The one place that reaches into jsonschema's privates, and why.

jsonschema's public API lets us replace a keyword's implementation (``validators.extend``), and we
replace ``pattern``, ``patternProperties`` and ``uniqueItems`` with bounded ones of our own. But
``additionalProperties`` and ``unevaluatedProperties`` match ``patternProperties`` inside private
helpers (``_utils``) with the standard ``re`` module, which cannot time out. To keep jsonschema's
exact logic for those keywords without forking it, we copy their functions with globals of our own:
``re.search`` becomes our bounded search. That needs the private keyword modules by name.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from jsonschema import _keywords, _legacy_keywords, _utils

Keyword = Callable[..., Any]


def _with_search(func: Keyword, search: Callable[..., Any], **helpers: Any) -> Keyword:
    """A copy of ``func`` whose global ``re.search`` (and the named helpers) are ours."""
    original: types.FunctionType = func  # type: ignore[assignment]
    namespace = {**original.__globals__, "re": types.SimpleNamespace(search=search), **helpers}
    clone = types.FunctionType(original.__code__, namespace, original.__name__, original.__defaults__)
    namespace[original.__name__] = clone  # the helpers recurse through their own global name
    return clone


def bounded_keywords(
    *, search: Callable[..., Any], pattern: Keyword, pattern_properties: Keyword, unique_items: Keyword
) -> dict[Keyword, Keyword]:
    """jsonschema's keyword function -> the one to use instead, for every keyword that matches a
    regular expression or can take quadratic time."""
    evaluated = _with_search(_utils.find_evaluated_property_keys_by_schema, search)
    legacy_evaluated = _with_search(_legacy_keywords.find_evaluated_property_keys_by_schema, search)
    return {
        _keywords.pattern: pattern,
        _keywords.patternProperties: pattern_properties,
        _keywords.uniqueItems: unique_items,
        _keywords.additionalProperties: _with_search(
            _keywords.additionalProperties,
            search,
            find_additional_properties=_with_search(_utils.find_additional_properties, search),
        ),
        _keywords.unevaluatedProperties: _with_search(
            _keywords.unevaluatedProperties, search, find_evaluated_property_keys_by_schema=evaluated
        ),
        _legacy_keywords.unevaluatedProperties_draft2019: _with_search(
            _legacy_keywords.unevaluatedProperties_draft2019,
            search,
            find_evaluated_property_keys_by_schema=legacy_evaluated,
        ),
    }
