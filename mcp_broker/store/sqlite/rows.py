"""How the contract's row types map to SQLite rows."""

from __future__ import annotations

import functools
import json
import sqlite3
from typing import Any

from ..contract import AdapterRow, InboxRow, ProtocolRow, SessionRow, StatusRow

# A session's JSON columns are read on every send and rarely change, so each distinct text is
# parsed once. The parsed values are shared between rows: read them, never change them.
_parsed = functools.lru_cache(maxsize=2048)(json.loads)


def protocol_row(row: sqlite3.Row) -> ProtocolRow:
    return ProtocolRow(
        name=row["name"],
        version=row["version"],
        schema=row["schema"],
        capabilities=json.loads(row["capabilities"]),
        metadata=json.loads(row["metadata"]),
        fingerprint=row["fingerprint"],
        registered_at=row["registered_at"],
        response_schema=row["response_schema"],
    )


def adapter_row(row: sqlite3.Row) -> AdapterRow:
    return AdapterRow(
        protocol=row["protocol"],
        from_version=row["from_version"],
        to_version=row["to_version"],
        steps=json.loads(row["steps"]),
        fingerprint=row["fingerprint"],
        registered_at=row["registered_at"],
    )


def session_row(row: sqlite3.Row) -> SessionRow:
    return SessionRow(
        id=row["id"],
        name=row["name"],
        protocols=_parsed(row["protocols"]),
        features=_parsed(row["features"]),
        metadata=_parsed(row["metadata"]),
        owner=row["owner"],
        host=row["host"],
        pid=row["pid"],
        proc_start=row["proc_start"],
        connected_at=row["connected_at"],
        last_seen=row["last_seen"],
        disconnected_at=row["disconnected_at"],
        revision=row["revision"],
        broker_version=row["broker_version"] if "broker_version" in row.keys() else None,  # noqa: SIM118
        queue_depth=row["queue_depth"] if "queue_depth" in row.keys() else 0,  # noqa: SIM118
    )


def inbox_row(row: sqlite3.Row, **changes: Any) -> InboxRow:
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
    keys = row.keys()
    if "replay_of" in keys:
        values |= dict(
            replay_of=row["replay_of"],
            stream_id=row["stream_id"],
            stream_seq=row["stream_seq"],
            last=bool(row["last"]),
        )
    return InboxRow(**(values | changes))


def status_row(row: sqlite3.Row) -> StatusRow:
    return StatusRow(
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
