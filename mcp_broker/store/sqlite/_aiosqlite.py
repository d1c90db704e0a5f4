"""The one place that reaches into aiosqlite's privates, and why.

A broker operation is one transaction of several statements with Python between them. aiosqlite's
public API awaits each statement on its worker thread separately: a thread round trip per statement,
and other coroutines' statements could interleave inside our transaction. So we hand the whole
transaction to the connection's worker thread as one job (``Connection._execute``), and run the
uncontended case directly on the event loop's thread with the underlying ``sqlite3`` connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import aiosqlite

T = TypeVar("T")


def raw(conn: aiosqlite.Connection) -> sqlite3.Connection:
    """The ``sqlite3`` connection aiosqlite wraps."""
    return conn._conn


def is_running(conn: aiosqlite.Connection) -> bool:
    """Whether the worker thread still takes jobs (it stops when the connection closes)."""
    return bool(conn._running)


async def in_worker(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` as one job on the connection's worker thread, queued at once."""
    return await conn._execute(fn, *args)
