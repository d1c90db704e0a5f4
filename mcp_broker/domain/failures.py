"""Store errors become public codes here, once, for every part of the domain."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..errors import BrokerError, Overloaded, StoreBusy, StoreUnavailable
from ..store import contract
from ..store.contract import Conflict, Retryable, StoreError, Unavailable

T = TypeVar("T")
C = TypeVar("C", bound=type)


def public(exc: StoreError) -> BrokerError:
    if isinstance(exc, contract.Overloaded):
        return Overloaded(str(exc), retry_after_seconds=exc.retry_after)
    if isinstance(exc, Retryable):
        return StoreBusy(str(exc))
    if isinstance(exc, Unavailable):
        return StoreUnavailable(str(exc))
    if isinstance(exc, Conflict):
        return StoreBusy(f"others kept changing what this call depends on ({exc}). Retry shortly.")
    return StoreUnavailable(f"the store failed: {exc}")


def _mapped(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return await fn(*args, **kwargs)
        except StoreError as exc:
            raise public(exc) from exc

    return wrapper


def maps_store_errors(cls: C) -> C:
    """Give every public coroutine method of a domain part the one mapping of store errors."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(member):
            setattr(cls, name, _mapped(member))
    return cls
