"""Storage: ``SqliteStore``, the one place that speaks SQL or imports aiosqlite.

One SQLite file in WAL mode shared by every broker process on the machine. A second backend (a
shared server-side store) must offer the same operations and pass the same contract tests.
"""

from .base import StoreBase
from .catalog import Catalog
from .queue import Queue
from .rows import (
    AdapterRow,
    EnqueueOutcome,
    InboxRow,
    NewMessage,
    Outgoing,
    ProtocolRow,
    SendContext,
    SessionRow,
    StatusRow,
    Target,
)

__all__ = [
    "AdapterRow",
    "EnqueueOutcome",
    "InboxRow",
    "NewMessage",
    "Outgoing",
    "ProtocolRow",
    "SendContext",
    "SessionRow",
    "SqliteStore",
    "StatusRow",
    "StoreBase",
    "Target",
]


class SqliteStore(Catalog, Queue):
    """The embedded store: the catalog and the queue over one SQLite file."""
