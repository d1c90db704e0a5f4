"""Rows of the store as immutable values; each knows its column mapping (``from_row``)."""

from __future__ import annotations

import functools
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

# A session's JSON columns are read on every send and rarely change, so each distinct text is
# parsed once. The parsed values are shared between rows: read them, never change them.
_parsed = functools.lru_cache(maxsize=2048)(json.loads)


@dataclass(frozen=True)
class ProtocolRow:
    name: str
    version: str
    schema: str
    capabilities: list[str]
    metadata: dict[str, Any]
    fingerprint: str
    registered_at: float
    response_schema: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ProtocolRow:
        return cls(
            name=row["name"],
            version=row["version"],
            schema=row["schema"],
            capabilities=json.loads(row["capabilities"]),
            metadata=json.loads(row["metadata"]),
            fingerprint=row["fingerprint"],
            registered_at=row["registered_at"],
            response_schema=row["response_schema"],
        )


@dataclass(frozen=True)
class SessionRow:
    id: str
    name: str
    protocols: list[dict[str, str]]
    features: list[str]
    metadata: dict[str, Any]
    owner: str | None
    host: str | None
    pid: int | None
    proc_start: str | None
    bell: str | None
    connected_at: float
    last_seen: float
    disconnected_at: float | None
    queue_depth: int = 0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SessionRow:
        keys = row.keys()
        return cls(
            id=row["id"],
            name=row["name"],
            protocols=_parsed(row["protocols"]),
            features=_parsed(row["features"]),
            metadata=_parsed(row["metadata"]),
            owner=row["owner"],
            host=row["host"],
            pid=row["pid"],
            proc_start=row["proc_start"],
            bell=row["bell"],
            connected_at=row["connected_at"],
            last_seen=row["last_seen"],
            disconnected_at=row["disconnected_at"],
            queue_depth=row["queue_depth"] if "queue_depth" in keys else 0,
        )


@dataclass(frozen=True)
class NewMessage:
    id: str
    sender_id: str
    broadcast: bool
    protocol: str
    version: str
    payload: str
    priority: int
    created_at: float
    expires_at: float | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    idempotency_key: str | None = None
    kind: str = "message"


@dataclass(frozen=True)
class InboxRow:
    message_id: str
    sender_id: str
    sender_name: str
    broadcast: bool
    kind: str
    protocol: str
    version: str
    payload: str
    priority: int
    created_at: float
    expires_at: float | None
    correlation_id: str | None
    reply_to: str | None
    attempts: int
    visible_at: float
    sent_version: str
    adapted_via: str | None
    state: str
    reason: str | None
    updated_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row, **changes: Any) -> InboxRow:
        """The row as read, with ``changes`` (such as a lease's new attempts) applied."""
        values = dict(
            message_id=row["message_id"],
            sender_id=row["sender_id"],
            sender_name=row["sender_name"] or row["sender_id"],
            broadcast=bool(row["broadcast"]),
            kind=row["kind"],
            protocol=row["protocol"],
            version=row["version"],
            payload=row["payload"],
            priority=row["priority"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            correlation_id=row["correlation_id"],
            reply_to=row["reply_to"],
            attempts=row["attempts"],
            visible_at=row["visible_at"],
            sent_version=row["sent_version"],
            adapted_via=row["adapted_via"],
            state=row["state"],
            reason=row["reason"],
            updated_at=row["updated_at"],
        )
        return cls(**(values | changes))


@dataclass(frozen=True)
class Target:
    """One recipient of a message, with the payload transformed for it when an adapter applies."""

    recipient_id: str
    version: str | None = None
    payload: str | None = None
    adapted_via: str | None = None


@dataclass(frozen=True)
class AdapterRow:
    protocol: str
    from_version: str
    to_version: str
    steps: list[dict[str, Any]]
    fingerprint: str
    registered_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> AdapterRow:
        return cls(
            protocol=row["protocol"],
            from_version=row["from_version"],
            to_version=row["to_version"],
            steps=json.loads(row["steps"]),
            fingerprint=row["fingerprint"],
            registered_at=row["registered_at"],
        )


@dataclass(frozen=True)
class StatusRow:
    """One delivery of a message this session sent, for ``message_status``."""

    message_id: str
    broadcast: bool
    protocol: str
    version: str
    created_at: float
    recipient_id: str
    recipient_name: str
    state: str
    reason: str | None
    attempts: int
    visible_at: float
    expires_at: float | None
    updated_at: float
    acked_at: float | None
    delivered_version: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> StatusRow:
        return cls(
            message_id=row["message_id"],
            broadcast=bool(row["broadcast"]),
            protocol=row["protocol"],
            version=row["version"],
            created_at=row["created_at"],
            recipient_id=row["recipient_id"],
            recipient_name=row["recipient_name"] or row["recipient_id"],
            state=row["state"],
            reason=row["reason"],
            attempts=row["attempts"],
            visible_at=row["visible_at"],
            expires_at=row["expires_at"],
            updated_at=row["updated_at"],
            acked_at=row["acked_at"],
            delivered_version=row["delivered_version"],
        )


@dataclass(frozen=True)
class SendContext:
    """Everything ``send`` needs to decide, read in one transaction."""

    sender: SessionRow | None
    recipient: SessionRow | None
    versions: list[str]
    capabilities: dict[str, list[str]]  # version -> what it allows
    agreed: str | None
    adapters: list[AdapterRow]


@dataclass(frozen=True)
class Outgoing:
    """What ``send`` decided from a ``SendContext``: the message, its deliveries, and its answer."""

    message: NewMessage
    targets: list[Target]
    answer: dict[str, Any]  # kept to be replayed for a repeated idempotency key
    recipient: SessionRow


@dataclass(frozen=True)
class EnqueueOutcome:
    """What one send or broadcast transaction did."""

    duplicate_result: dict[str, Any] | None = None
    delivered_to: tuple[str, ...] = ()
    full: tuple[tuple[str, int], ...] = ()  # (recipient_id, depth) skipped because the inbox is full
