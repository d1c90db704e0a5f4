"""The outbox file: what waits to be forwarded, one row per message, in the order it was written."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio

from ..contract import NewMessage, Target

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    sender_id  TEXT NOT NULL,
    body       TEXT NOT NULL,                   -- the message, its targets and the enqueue's options
    state      TEXT NOT NULL DEFAULT 'pending', -- pending | failed
    reason     TEXT,
    spooled_at REAL NOT NULL,
    failed_at  REAL
);
CREATE INDEX IF NOT EXISTS outbox_sender ON outbox (sender_id, state);
"""


@dataclasses.dataclass(frozen=True)
class Spooled:
    seq: int
    message: NewMessage
    targets: list[Target]
    max_inbox: int
    refuse_full: bool
    answer: dict[str, Any] | None
    state: str
    reason: str | None
    failed_at: float | None


class Outbox:
    """The outbox file: each call one short transaction, run on a worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")  # answered `spooled` means on disk
        return db

    async def _run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        def work() -> T:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    out = job(db)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                return out
            finally:
                db.close()

        return await anyio.to_thread.run_sync(work)

    async def open(self) -> None:
        def create() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.path.touch(mode=0o600, exist_ok=True)
            db = self._connect()
            try:
                db.executescript(SCHEMA)
            finally:
                db.close()

        await anyio.to_thread.run_sync(create)

    async def add(
        self, message: NewMessage, targets: Sequence[Target], max_inbox: int, refuse_full: bool, answer: Any
    ) -> None:
        body = json.dumps(
            {
                "message": dataclasses.asdict(message),
                "targets": [dataclasses.asdict(t) for t in targets],
                "max_inbox": max_inbox,
                "refuse_full": refuse_full,
                "answer": answer,
            }
        )
        await self._run(
            lambda db: db.execute(
                "INSERT OR IGNORE INTO outbox (message_id, sender_id, body, spooled_at) VALUES (?, ?, ?, ?)",
                (message.id, message.sender_id, body, message.created_at),
            )
        )

    async def pending(self, sender_id: str | None = None, limit: int = 100) -> list[Spooled]:
        where, args = "state = 'pending'", list[Any]([limit])
        if sender_id is not None:
            where, args = "state = 'pending' AND sender_id = ?", [sender_id, limit]
        return await self._select(f"{where} ORDER BY seq LIMIT ?", args)

    async def of_messages(self, sender_id: str, message_ids: Sequence[str]) -> list[Spooled]:
        marks = ",".join("?" * len(message_ids))
        return await self._select(
            f"sender_id = ? AND message_id IN ({marks}) ORDER BY seq", [sender_id, *message_ids]
        )

    async def failed(self, sender_id: str) -> list[Spooled]:
        return await self._select("state = 'failed' AND sender_id = ? ORDER BY seq DESC", [sender_id])

    async def _select(self, where: str, args: list[Any]) -> list[Spooled]:
        def run(db: sqlite3.Connection) -> list[Spooled]:
            rows = db.execute(f"SELECT seq, body, state, reason, failed_at FROM outbox WHERE {where}", args)
            return [_spooled(*row) for row in rows]

        return await self._run(run)

    async def done(self, seq: int) -> None:
        await self._run(lambda db: db.execute("DELETE FROM outbox WHERE seq = ?", (seq,)))

    async def fail(self, seq: int, reason: str, now: float) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE outbox SET state = 'failed', reason = ?, failed_at = ? WHERE seq = ?",
                (reason, now, seq),
            )
        )


def _spooled(seq: int, body: str, state: str, reason: str | None, failed_at: float | None) -> Spooled:
    found = json.loads(body)
    return Spooled(
        seq=seq,
        message=NewMessage(**found["message"]),
        targets=[Target(**t) for t in found["targets"]],
        max_inbox=found["max_inbox"],
        refuse_full=found["refuse_full"],
        answer=found["answer"],
        state=state,
        reason=reason,
        failed_at=failed_at,
    )
