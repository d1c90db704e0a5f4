"""The outbox: a wrapper engine that keeps sends durable on this machine while a network store is down.

``SpoolingStore(inner, outbox_path)`` is a ``Store`` around another one (Redis). While the inner
store answers, every call passes through. When it cannot be reached:

- the process keeps running: ``open`` succeeds, and a keeper task reconnects with backoff, logging
  each change of state once;
- ``enqueue`` (send, broadcast) is written to a local SQLite outbox and answered ``spooled``; the
  decision before it is made on the last snapshot this process read (protocols are immutable, so
  the schemas it validated against are the ones the store holds). Once the store is back, the
  keeper forwards the outbox in the order it was written, each by its message id, which the
  contract makes idempotent: a forward interrupted after its write never stores twice. While a
  sender has messages in the outbox, its new sends queue behind them, so order holds;
- a spooled message that can no longer be delivered (its recipient gone, its inbox full) stays in
  the outbox as failed, with its reason: ``message_status`` and the sender's ``dead_letters`` show it;
- heartbeats, pruning and the end of a session wait quietly for the store (others see the
  session go stale instead); every other read and receive/ack answers
  ``Unavailable``, which the domain turns into ``STORE_UNAVAILABLE`` with a retry hint.

The outbox is one SQLite file per store and namespace (WAL, ``synchronous=FULL``), shared by the
broker processes of this machine, so it survives a restart of any of them; whichever process
reaches the store first forwards it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ...config import Settings, default_db_path
from ..contract import Notifier, Store
from .outbox import Outbox, Spooled
from .store import SpoolingStore

__all__ = ["Outbox", "Spooled", "SpoolingStore", "outbox_path", "spooling"]


def outbox_path(store_url: str) -> Path:
    """This machine's outbox for one store and namespace, beside the default SQLite file."""
    digest = hashlib.sha1(store_url.encode()).hexdigest()[:16]
    return default_db_path().parent / "outbox" / f"{digest}.db"


def spooling(store: Store, notifier: Notifier, settings: Settings) -> Store:
    """``store`` with an outbox when it is a network store (the SQLite file is on this machine)."""
    from .. import sqlite_path

    if sqlite_path(settings.store) is not None:
        return store
    return SpoolingStore(store, outbox_path(store.url), notify=notifier.notify)
