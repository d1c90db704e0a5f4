"""Storage behind one contract (``contract.py``), and the engines that keep it.

``open_store`` picks the engine from the store URL: ``sqlite:///absolute/path.db`` or a plain path
(the default: the per-user SQLite file). The domain sees only the contract.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..config import Settings
from .contract import Notifier, Store

__all__ = ["Notifier", "Store", "StoreUrlError", "check_store_url", "open_engine", "sqlite_path"]

ENGINES = {"sqlite": "SQLite (built in)"}


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


def check_store_url(url: str) -> None:
    """Refuse, with what to do, a store URL that no engine here serves."""
    if sqlite_path(url) is None:
        scheme = urlsplit(url).scheme
        raise StoreUrlError(
            f"unknown store URL scheme {scheme!r}; use a path or sqlite:///absolute/path.db "
            f"(engines here: {', '.join(ENGINES.values())})"
        )


def open_engine(settings: Settings) -> tuple[Store, Notifier]:
    """The store and notifier for ``settings.store``, not yet opened."""
    check_store_url(settings.store)
    path = sqlite_path(settings.store)
    assert path is not None
    from .sqlite import BellNotifier, SqliteStore

    store = SqliteStore(path, durability=settings.durability, busy_budget=settings.lock_timeout)
    return store, BellNotifier(path)
