"""Streams, rate buckets and history on Redis (the rules are in ``store/features.py``).

Keys (below the namespace's prefix): ``st:<id>`` a stream's hash, ``sc:<id>`` its chunks (number ->
message id), ``stopen:<sender>`` the sender's open streams, ``stidle`` open streams by their last
append, ``stdone`` finished ones by when they ended (for pruning); ``rb:<session>`` a rate bucket,
``buckets`` the sessions with one; ``hist:<session>`` what a session sent and received, by the
order messages were stored (``pos``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import cursors
from ..contract import NewMessage, Target
from ..features import (
    AppendOutcome,
    AppendRefused,
    Charge,
    HistoryEntry,
    HistoryPage,
    HistoryQuery,
    RateState,
    StreamRow,
    StreamState,
)
from .base import RedisBase
from .queue import expires_arg, message_fields, target_args
from .rows import fields, inbox_row, status_row

HISTORY_CURSOR = "redis-hi"
SCAN_BUDGET = 20_000  # history entries one call reads at most, so a script never holds Redis long


def _opt(value: float | None) -> str:
    return "" if value is None else repr(value)


class Features(RedisBase):
    """The message features, each operation one script."""

    async def open_stream(self, stream: StreamRow, *, max_open: int) -> bool:
        stored = await self._run(
            "open_stream",
            stream.id,
            stream.sender_id,
            stream.recipient_id,
            stream.protocol,
            stream.version,
            repr(stream.opened_at),
            repr(stream.last_at),
            max_open,
        )
        return bool(stored)

    async def append_chunk(
        self, message: NewMessage, target: Target, *, max_chunks: int, max_inbox: int
    ) -> AppendOutcome:
        parts = message_fields(message)
        found, value = await self._run(
            "append_chunk",
            message.stream_id or "",
            message.sender_id,
            max_chunks,
            max_inbox,
            repr(message.created_at),
            int(message.last),
            message.id,
            message.priority,
            message.protocol,
            expires_arg(message),
            len(parts) // 2,
            *parts,
            *target_args([target]),
        )
        if found == "stored":
            return AppendOutcome(int(value))
        return AppendOutcome(None, AppendRefused(found), int(value))

    async def end_stream(
        self, stream_id: str, sender_id: str, *, reason: str, now: float, notice: NewMessage
    ) -> bool:
        parts = message_fields(notice)
        ended = await self._run(
            "end_stream",
            stream_id,
            sender_id,
            reason,
            repr(now),
            notice.id,
            notice.priority,
            notice.protocol,
            expires_arg(notice),
            len(parts) // 2,
            *parts,
            *target_args([Target("")]),  # the script fills in the stream's recipient
        )
        return bool(ended)

    async def stream(self, stream_id: str) -> StreamRow | None:
        (found,) = await self._run("streams", "one", stream_id)
        return None if found is None else _stream(found)

    async def idle_streams(self, *, before: float, limit: int) -> list[StreamRow]:
        return [_stream(r) for r in await self._run("streams", "idle", repr(before), limit)]

    async def charge(self, session_id: str, cost: int, *, rate: float, burst: float, now: float) -> Charge:
        allowed, tokens, retry_after = await self._run(
            "charge", session_id, cost, repr(rate), repr(burst), repr(now)
        )
        return Charge(bool(allowed), float(tokens), float(retry_after))

    async def rate_states(self, *, since: float) -> dict[str, RateState]:
        found = await self._run("rate_states", repr(since))
        return {sid: RateState(float(tokens), float(at), int(sent)) for sid, tokens, at, sent in found}

    async def history(self, session_id: str, query: HistoryQuery) -> HistoryPage:
        before = "+inf"
        if query.cursor is not None:
            before = str(cursors.decode(HISTORY_CURSOR, query.cursor, 2**53))
        found, last, cut_short = await self._run(
            "history",
            session_id,
            before,
            query.limit + 1,
            query.direction or "",
            query.peer_id or "",
            query.protocol or "",
            _opt(query.since),
            _opt(query.until),
            SCAN_BUDGET,
        )
        page = found[: query.limit]
        entries = [_entry(sent, view, rows) for _, sent, view, rows in page]
        cursor: int | None = None
        if len(found) > query.limit:
            cursor = int(page[-1][0])
        elif cut_short:
            cursor = int(last)  # the budget ran out: go on from where the scan stopped
        return HistoryPage(entries, None if cursor is None else cursors.encode(HISTORY_CURSOR, cursor))


def _entry(sent: int, view: Sequence[Any], rows: Sequence[Any]) -> HistoryEntry:
    deliveries = [status_row(r) for r in rows]
    return HistoryEntry("sent" if sent else "received", inbox_row(view), deliveries)


def _stream(found: Sequence[Any]) -> StreamRow:
    flat, received, acked = found
    s = fields(flat)
    return StreamRow(
        id=s["id"],
        sender_id=s["sender_id"],
        recipient_id=s["recipient_id"],
        protocol=s["protocol"],
        version=s["version"],
        state=StreamState(s["state"]),
        reason=s.get("reason"),
        opened_at=float(s["opened_at"]),
        last_at=float(s["last_at"]),
        chunks=int(s["chunks"]),
        received=int(received),
        acked=int(acked),
    )
