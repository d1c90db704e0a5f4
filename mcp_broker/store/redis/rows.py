"""How the contract's row types map to what the scripts return: flat field lists and JSON rows."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from typing import Any

from ..contract import AdapterRow, InboxRow, ProtocolRow, SessionRow, StatusRow

# A session's JSON fields are read on every send and rarely change, so each distinct text is
# parsed once. The parsed values are shared between rows: read them, never change them.
_parsed = functools.lru_cache(maxsize=2048)(json.loads)


def fields(flat: Sequence[Any]) -> dict[str, Any]:
    """A hash as HGETALL returns it (field, value, field, value ...), as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


def row_json(row: ProtocolRow | AdapterRow) -> str:
    """A catalog row as stored: immutable, so kept whole as one JSON text."""
    return json.dumps(dataclasses.asdict(row), sort_keys=True)


def protocol_row(text: str) -> ProtocolRow:
    return ProtocolRow(**json.loads(text))


def adapter_row(text: str) -> AdapterRow:
    return AdapterRow(**json.loads(text))


def session_row(flat: Sequence[Any]) -> SessionRow:
    s = fields(flat)
    return SessionRow(
        id=s["id"],
        name=s["name"],
        protocols=_parsed(s["protocols"]),
        features=_parsed(s["features"]),
        metadata=_parsed(s["metadata"]),
        owner=s.get("owner"),
        host=s.get("host"),
        pid=int(s["pid"]) if "pid" in s else None,
        proc_start=s.get("proc_start"),
        connected_at=float(s["connected_at"]),
        last_seen=float(s["last_seen"]),
        disconnected_at=_float(s.get("disconnected_at")),
        revision=int(s["revision"]),
        broker_version=s.get("broker_version"),
        queue_depth=int(s.get("queue_depth", 0)),
    )


def attempts_of(found: Sequence[Any]) -> int:
    """The attempts of a delivery as a script found it (see ``inbox_row``)."""
    return int(fields(found[1])["attempts"])


def inbox_row(found: Sequence[Any], **changes: Any) -> InboxRow:
    """``{message id, delivery fields, message fields, sender name}`` with ``changes`` applied."""
    message_id, flat_d, flat_m, sender_name = found
    d, m = fields(flat_d), fields(flat_m)
    values = dict(
        message_id=message_id,
        sender_id=m["sender_id"],
        sender_name=sender_name or m["sender_id"],
        broadcast=m["broadcast"] == "1",
        kind=m["kind"],
        protocol=m["protocol"],
        version=d.get("version", m["version"]),
        payload=d.get("payload", m["payload"]),
        priority=int(d["priority"]),
        created_at=float(m["created_at"]),
        expires_at=_float(d.get("expires_at")),
        correlation_id=m.get("correlation_id"),
        reply_to=m.get("reply_to"),
        attempts=int(d["attempts"]),
        visible_at=float(d["visible_at"]),
        sent_version=m["version"],
        adapted_via=d.get("adapted_via"),
        state=d["state"],
        reason=d.get("reason"),
        updated_at=float(d["updated_at"]),
        replay_of=m.get("replay_of"),
        stream_id=m.get("stream_id"),
        stream_seq=int(m["stream_seq"]) if "stream_seq" in m else None,
        last=m.get("last") == "1",
    )
    return InboxRow(**(values | changes))


def status_row(found: Sequence[Any]) -> StatusRow:
    """A delivery as ``status_row`` in ``_lib.lua`` returns it."""
    mid, broadcast, protocol, version, created, rid, rname = found[:7]
    _, state, reason, attempts, visible, expires, updated, acked, delivered = found[7:]
    return StatusRow(
        message_id=mid,
        broadcast=broadcast == "1",
        protocol=protocol,
        version=version,
        created_at=float(created),
        recipient_id=rid,
        recipient_name=rname or rid,
        state=state,
        reason=reason,
        attempts=int(attempts),
        visible_at=float(visible),
        expires_at=_float(expires),
        updated_at=float(updated),
        acked_at=_float(acked),
        delivered_version=delivered or version,
    )
