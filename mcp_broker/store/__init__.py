"""Storage behind one contract (``contract.py``), and the engines that keep it.

``open_engine`` picks the engine from the store URL: ``sqlite:///absolute/path.db`` or a plain path
(the default: the per-user SQLite file), or ``redis://[user:password@]host:port/db``, ``rediss://...``
(TLS) or ``unix:///path/redis.sock`` for Redis (the ``redis`` extra). The domain sees only the contract.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..config import Settings, check_namespace
from .contract import Notifier, Store

__all__ = ["Notifier", "Store", "StoreUrlError", "check_store_url", "open_engine", "sqlite_path"]

ENGINES = {
    "sqlite": "SQLite (built in)",
    "redis": "Redis: redis://, rediss://, unix:// (pip install 'mcp-broker[redis]')",
}
REDIS_SCHEMES = ("redis", "rediss", "unix")


class StoreUrlError(ValueError):
    """A store URL this installation cannot serve; the message says what to do."""


def sqlite_path(url: str) -> Path | None:
    """The file a SQLite store URL (or plain path) names; None for another engine's URL."""
    if "://" not in url:
        return Path(url).expanduser()
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        return None
    if parts.netloc not in ("", "localhost"):
        raise StoreUrlError(f"a sqlite URL names a local file: sqlite:///absolute/path.db, not {url!r}")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise StoreUrlError(f"use an absolute path: sqlite:///absolute/path.db (got {url!r})")
    return Path(path)


def _check_redis_url(url: str) -> None:
    if importlib.util.find_spec("redis") is None:
        raise StoreUrlError(
            f"{urlsplit(url).scheme}:// is a Redis store, and redis-py is not installed here: "
            "pip install 'mcp-broker[redis]'"
        )
    from .redis.connection import RedisUrl

    try:
        RedisUrl.parse(url)
    except ValueError as exc:
        raise StoreUrlError(str(exc)) from exc


def check_store_url(url: str) -> None:
    """Refuse, with what to do, a store URL that no engine here serves."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme in REDIS_SCHEMES:
        _check_redis_url(url)
    elif sqlite_path(url) is None:
        raise StoreUrlError(
            f"unknown store URL scheme {scheme!r}; use a path, sqlite:///absolute/path.db, "
            f"redis://host:6379/0, rediss://... or unix:///path/redis.sock "
            f"(engines: {'; '.join(ENGINES.values())})"
        )


def open_engine(settings: Settings) -> tuple[Store, Notifier]:
    """The store and notifier for ``settings.store`` in ``settings.namespace``, not yet opened."""
    check_store_url(settings.store)
    try:
        check_namespace(settings)
    except ValueError as exc:
        raise StoreUrlError(str(exc)) from exc
    path = sqlite_path(settings.store)
    if path is None:
        from .redis import RedisNotifier, RedisStore

        redis_store = RedisStore(settings.store, namespace=settings.namespace, durability=settings.durability)
        return redis_store, RedisNotifier(redis_store)
    from .sqlite import BellNotifier, SqliteStore

    store = SqliteStore(
        path, namespace=settings.namespace, durability=settings.durability, busy_budget=settings.lock_timeout
    )
    return store, BellNotifier(path, settings.namespace)
