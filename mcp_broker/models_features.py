"""Pydantic models of the message features' results: streams, history, replays."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .models import DeliveryStatus, Value


class StreamInfo(Value):
    stream_id: str
    recipient: str
    recipient_id: str
    protocol: str
    version: str
    state: str = Field(description="`open`, `closed` (its last chunk arrived) or `aborted` (see reason)")
    reason: str | None = None
    chunks: int = Field(description="chunks appended so far")
    received: int = Field(description="chunks the recipient has received at least once")
    acked: int = Field(description="chunks the recipient has acked")
    opened_at: str
    last_chunk_at: str


class ChunkResult(Value):
    stream_id: str
    message_id: str
    seq: int = Field(description="the chunk's place in the stream, from 1")
    last: bool
    status: str = Field(description="`delivered` (recipient active) or `queued`")


class HistoryItem(Value):
    message_id: str
    direction: str = Field(description="`sent` or `received`")
    sender: str
    sender_id: str
    protocol: str
    version: str
    kind: str
    payload: Any
    created_at: str
    broadcast: bool
    correlation_id: str | None = None
    replay_of: str | None = None
    stream_id: str | None = None
    stream_seq: int | None = None
    deliveries: list[DeliveryStatus] = Field(
        description="every recipient of what you sent; your own delivery of what you received"
    )


class HistoryResult(Value):
    messages: list[HistoryItem]
    next_cursor: str | None = None


class ReplayResult(Value):
    message_id: str = Field(description="the copy's id; its receipts are its own")
    replay_of: str
    recipients: list[str]
    status: str = Field(description="`delivered` when every recipient is active, else `queued`")
