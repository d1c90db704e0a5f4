"""The one mapping from the domain's refusals to MCP errors, for tools and resources alike.

A refusal is an answer, not a server fault: it is logged quietly, and its text starts with the
stable code. Anything else is masked to the client by FastMCP and logged with its traceback.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from fastmcp import FastMCP
from fastmcp.exceptions import NotFoundError, ResourceError, ToolError, ValidationError
from fastmcp.server.middleware import Middleware, MiddlewareContext
from fastmcp.tools import FunctionTool, ToolResult
from mcp.types import TextContent, ToolAnnotations
from pydantic import ValidationError as PydanticValidationError

from ..errors import BrokerError, InvalidArgument, UnknownTool
from .profiles import lean_schema

P = ParamSpec("P")
PUBLIC_DETAILS = frozenset({"retry_after_seconds"})  # refusal details a result's _meta.error carries
R = TypeVar("R")
MAX_PROBLEMS = 10
MAX_PROBLEM_CHARS = 200


def _short(text: str, limit: int = MAX_PROBLEM_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def argument_problems(exc: ValidationError) -> str:
    """What was wrong with the arguments, readable and bounded (values are never echoed whole)."""
    cause = exc.__cause__
    if isinstance(cause, PydanticValidationError):
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {_short(err['msg'])}"
            for err in cause.errors(include_url=False, include_input=False)[:MAX_PROBLEMS]
        ]
        return "; ".join(problems)
    return _short(str(exc), 500)


class ArgumentErrors(Middleware):
    """Arguments that fail the input schema become INVALID_ARGUMENT; an unknown tool is UNKNOWN_TOOL."""

    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        try:
            return await call_next(context)
        except NotFoundError as exc:
            raise ToolError(
                f"{UnknownTool.code}: {_short(str(exc))}; tools/list shows the tools", log_level=logging.INFO
            ) from exc
        except ValidationError as exc:
            raise ToolError(
                f"{InvalidArgument.code}: {argument_problems(exc)}. Check the tool's input schema and retry.",
                log_level=logging.INFO,
            ) from exc


def tool_registrar(
    mcp: FastMCP,
    *,
    enabled: Callable[[str], bool] = lambda name: True,
    seen: set[str] | None = None,
) -> Callable[..., Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]]:
    """``@tool(title=..., read_only=...)``: register a tool whose refusals carry their stable code.

    Only tools ``enabled`` accepts are registered (a profile); ``seen`` collects every name offered, so
    the caller can refuse a profile that names no such tool. Input schemas are advertised lean
    (``profiles.lean_schema``); arguments are validated against the signature as before.
    """

    def tool(
        *,
        title: str,
        read_only: bool = False,
        idempotent: bool = False,
        destructive: bool = False,
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        annotations = ToolAnnotations(
            title=title,
            read_only_hint=read_only,
            idempotent_hint=idempotent,
            destructive_hint=destructive,
            open_world_hint=False,
        )

        def register(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
            if seen is not None:
                seen.add(fn.__name__)
            if not enabled(fn.__name__):
                return fn

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                try:
                    return await fn(*args, **kwargs)
                except BrokerError as exc:
                    data = {k: v for k, v in exc.details.items() if k in PUBLIC_DETAILS and v is not None}
                    if not data:
                        raise ToolError(str(exc), log_level=logging.INFO) from exc
                    # A refusal with data a program acts on (when to retry) carries it in the result's
                    # _meta too; the output schema describes successes, so it cannot go there.
                    error = {"code": exc.code, **data}
                    text = [TextContent(type="text", text=str(exc))]
                    return ToolResult(content=text, meta={"error": error}, is_error=True)  # type: ignore[return-value]

            # The description given, not left in a docstring: FastMCP would parse a docstring with
            # griffe (importing it: about 0.1 s of every start) to find sections these do not have.
            description = inspect.getdoc(fn)
            wrapper.__doc__ = None
            made = FunctionTool.from_function(wrapper, annotations=annotations, description=description)
            made.parameters = lean_schema(made.parameters)
            mcp.add_tool(made)
            return fn

        return register

    return tool


def resource_refusal(exc: BrokerError) -> ResourceError:
    """A refusal on resources/read: an answer with its code, logged in one quiet line (FastMCP logs a
    ResourceError with its traceback at the error's own level, so that level is DEBUG)."""
    logging.getLogger("mcp_broker.mcp").info("resource refused: %s", exc)
    return ResourceError(str(exc), log_level=logging.DEBUG)
