"""Messages and their deliveries: the queued -> leased -> acked | dead_lettered state machine."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .. import cursors
from ..contract import (
    IDEMPOTENCY_WINDOW,
    AckState,
    Conflict,
    DeadLetterPage,
    EnqueueOutcome,
    Guard,
    InboxRow,
    NewMessage,
    RequeueOutcome,
    RequeueState,
    StatusReport,
    Target,
)
from ..features import Charge, RateCharge
from .base import RedisBase
from .rows import attempts_of, inbox_row, status_row

# Server-side lifetime of an idempotency key: the window by the callers' clocks decides; this
# only lets Redis drop keys that can no longer match.
IDEMPOTENCY_TTL = int(IDEMPOTENCY_WINDOW + 3600)


def message_fields(message: NewMessage) -> list[str]:
    """The message as (field, value) pairs, leaving out what is not set."""
    values: dict[str, Any] = {
        "sender_id": message.sender_id,
        "broadcast": int(message.broadcast),
        "kind": message.kind,
        "protocol": message.protocol,
        "version": message.version,
        "payload": message.payload,
        "created_at": repr(message.created_at),
        "priority": message.priority,
        "expires_at": None if message.expires_at is None else repr(message.expires_at),
        "correlation_id": message.correlation_id,
        "reply_to": message.reply_to,
        "idempotency_key": message.idempotency_key,
        "replay_of": message.replay_of,
        "stream_id": message.stream_id,
        "stream_seq": message.stream_seq,
        "last": 1 if message.last else None,
    }
    return [str(x) for k, v in values.items() if v is not None for x in (k, v)]


def target_args(targets: Sequence[Target]) -> list[str]:
    return [
        part
        for t in targets
        for part in (t.recipient_id, t.version or "", t.payload or "", t.adapted_via or "")
    ]


def expires_arg(message: NewMessage) -> str:
    return "" if message.expires_at is None else repr(message.expires_at)


class Queue(RedisBase):
    """Enqueue, lease, ack, requeue and report on deliveries, each operation one script."""

    async def enqueue(
        self,
        message: NewMessage,
        targets: Sequence[Target],
        *,
        max_inbox: int,
        refuse_full: bool,
        answer: dict[str, Any] | None = None,
        guard: Guard | None = None,
        rate: RateCharge | None = None,
    ) -> EnqueueOutcome:
        fields = message_fields(message)
        charge = (
            (rate.session_id, rate.cost, repr(rate.rate), repr(rate.burst)) if rate else ("", 0, "0", "0")
        )
        found = await self._run(
            "enqueue",
            message.id,
            message.sender_id,
            guard.recipient_id if guard else "",
            str(guard.revision) if guard else "",
            message.idempotency_key or "",
            repr(message.created_at - IDEMPOTENCY_WINDOW),
            json.dumps(answer or {}),
            max_inbox,
            int(refuse_full),
            repr(message.created_at),
            expires_arg(message),
            message.priority,
            message.protocol,
            IDEMPOTENCY_TTL,
            *charge,
            len(fields) // 2,
            *fields,
            *target_args(targets),
        )
        if found[0] == "conflict":
            raise Conflict("the recipient reconnected since the send was decided")
        if found[0] == "duplicate":
            return EnqueueOutcome(duplicate_result=json.loads(found[1]))
        if found[0] == "limited":
            return EnqueueOutcome(limited=Charge(False, float(found[1]), float(found[2])))
        full = tuple((r, int(n)) for r, n in zip(found[2][::2], found[2][1::2], strict=True))
        if found[0] == "full":
            return EnqueueOutcome(full=full)
        return EnqueueOutcome(delivered_to=tuple(found[1]), full=full, stored=True)

    async def lease(
        self,
        recipient_id: str,
        owner: str,
        *,
        limit: int,
        lease_seconds: float,
        now: float,
        max_attempts: int,
        protocol: str | None = None,
        stream_id: str | None = None,
    ) -> list[InboxRow]:
        until = now + lease_seconds
        found = await self._run(
            "lease",
            recipient_id,
            owner,
            limit,
            repr(now),
            repr(until),
            max_attempts,
            protocol or "",
            stream_id or "",
        )
        # Read before the lease changed them: shown as the lease left them (see the contract).
        return [
            inbox_row(r, state="leased", attempts=attempts_of(r) + 1, visible_at=until, updated_at=now)
            for r in found
        ]

    async def ack(self, recipient_id: str, message_ids: Sequence[str], now: float) -> dict[str, AckState]:
        ids = list(dict.fromkeys(message_ids))
        kind, states = await self._run("ack", recipient_id, repr(now), *ids)
        if kind == "unknown":
            return {m: AckState.unknown for m in states}
        return {m: AckState(s) for m, s in zip(ids, states, strict=True)}

    async def requeue(
        self,
        recipient_id: str,
        message_ids: Sequence[str],
        *,
        now: float,
        from_states: tuple[str, ...],
        delay: float = 0.0,
        reset_attempts: bool,
        max_inbox: int | None = None,
    ) -> RequeueOutcome:
        ids = list(dict.fromkeys(message_ids))
        found = await self._run(
            "requeue",
            recipient_id,
            repr(now),
            repr(now + delay),
            int(delay > 0),
            int(reset_attempts),
            "" if max_inbox is None else max_inbox,
            len(from_states),
            *from_states,
            *ids,
        )
        if found[0] == "unknown":
            return RequeueOutcome({m: RequeueState.unknown for m in found[1]})
        before = dict(zip(ids, found[1], strict=True))
        if found[0] == "full":
            return RequeueOutcome({m: RequeueState(s) for m, s in before.items()}, full_depth=int(found[2]))
        return RequeueOutcome(
            {m: RequeueState.requeued if s in from_states else RequeueState(s) for m, s in before.items()}
        )

    async def peek(self, recipient_id: str, limit: int, now: float) -> list[InboxRow]:
        return [inbox_row(r) for r in await self._run("peek", recipient_id, limit, repr(now))]

    async def dead_letters(self, recipient_id: str, *, limit: int, cursor: str | None) -> DeadLetterPage:
        """This recipient's dead letters, newest first; the cursor is the last row's place."""
        before = "+inf" if cursor is None else str(_decode_seq(cursor))
        found = await self._run("dead", recipient_id, before, limit + 1)
        page = found[:limit]
        more = len(found) > limit
        return DeadLetterPage(
            [inbox_row(row) for _, row in page], _encode_seq(int(float(page[-1][0]))) if more else None
        )

    async def message_status(self, sender_id: str, message_ids: Sequence[str]) -> StatusReport:
        known, found = await self._run("status", sender_id, *dict.fromkeys(message_ids))
        rows = [status_row(r) for r in sorted(found, key=lambda r: int(r[7]))]
        return StatusReport(rows, set(known))

    async def request_for_reply(self, recipient_id: str, message_id: str) -> InboxRow | None:
        (found,) = await self._run("rows", recipient_id, message_id)
        return None if found is None else inbox_row(found)

    async def reply(self, recipient_id: str, request_id: str, message: NewMessage, target: Target) -> bool:
        fields = message_fields(message)
        stored = await self._run(
            "reply",
            recipient_id,
            request_id,
            message.id,
            repr(message.created_at),
            message.priority,
            message.protocol,
            expires_arg(message),
            len(fields) // 2,
            *fields,
            *target_args([target]),
        )
        return bool(stored)

    async def take_reply(self, requester_id: str, request_id: str, now: float) -> InboxRow | None:
        found = await self._run("take_reply", requester_id, request_id, repr(now))
        if not found:
            return None
        taken, row = found
        if not taken:  # already taken by receive and acked: answer all the same
            return inbox_row(row)
        return inbox_row(row, attempts=attempts_of(row) + 1, state="acked")

    async def sent_request(self, sender_id: str, request_id: str) -> bool:
        sender, kind = await self._command("HMGET", self.keys.message(request_id), "sender_id", "kind")
        return sender == sender_id and kind == "request"

    async def prune(
        self, *, before: float, now: float, sessions_before: float | None = None
    ) -> dict[str, int]:
        cutoff = before if sessions_before is None else sessions_before
        found = await self._run("prune", repr(before), repr(now), repr(cutoff))
        names = ("deliveries", "messages", "sessions", "events")
        return {name: int(n) for name, n in zip(names, found, strict=True)}


def _encode_seq(seq: int) -> str:
    return cursors.encode("redis-dl", seq)


def _decode_seq(cursor: str) -> int:
    return cursors.decode("redis-dl", cursor, 2**53)
