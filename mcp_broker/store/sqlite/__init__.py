"""The embedded engine: one SQLite file in WAL mode shared by every broker process on the machine."""

from __future__ import annotations

from pathlib import Path

from .catalog import Catalog
from .features import Features
from .notifier import BellNotifier
from .replies import Replies
from .traffic import Traffic

__all__ = ["BellNotifier", "SqliteStore"]


class SqliteStore(Catalog, Replies, Features, Traffic):
    """The catalog, the queue and the traffic log over one SQLite file; the contract's embedded engine."""

    def __init__(
        self, path: Path, *, namespace: str = "default", durability: str = "normal", busy_budget: float = 10.0
    ) -> None:
        super().__init__(Path(path), namespace=namespace, durability=durability, busy_budget=busy_budget)
        self.url = f"sqlite://{self.path}"
