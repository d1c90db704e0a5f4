"""Tools for streams (ordered chunks to one recipient) and for history and replays."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from ..domain import Broker
from ..models_features import ChunkResult, HistoryResult, ReplayResult, StreamInfo
from .params import Cursor, MessageId, PageLimit, Payload, ProtocolName, SessionRef, StreamId, Version

Seconds = Annotated[float | None, Field(strict=True, ge=0, description="Unix time in seconds")]


def register(tool: Any, broker: Broker) -> None:
    # Long on purpose: the group's tools are closures over the parts they call; one registration per group.
    streams, past = broker.streams, broker.history

    @tool(title="Open a stream")
    async def open_stream(
        to: SessionRef, protocol: ProtocolName, version: Version | None = None
    ) -> StreamInfo:
        """Start sending one long result in ordered parts to one session (protocol needs streaming).

        The recipient receives the chunks in order, one at a time, without gaps."""
        return await streams.open_stream(to, protocol, version)

    @tool(title="Append a chunk")
    async def append_chunk(
        stream_id: StreamId,
        payload: Payload,
        last: Annotated[
            bool, Field(strict=True, description="true closes the stream with this chunk")
        ] = False,
    ) -> ChunkResult:
        """Send the stream's next chunk, validated against the stream's protocol version."""
        return await streams.append_chunk(stream_id, payload, last)

    @tool(title="Close a stream")
    async def close_stream(stream_id: StreamId, payload: Payload) -> ChunkResult:
        """Send the stream's last chunk and close it."""
        return await streams.append_chunk(stream_id, payload, True)

    @tool(title="Abort a stream")
    async def abort_stream(
        stream_id: StreamId,
        reason: Annotated[
            str, Field(strict=True, min_length=1, max_length=500, description="told to the recipient")
        ],
    ) -> StreamInfo:
        """End a stream without its last chunk; what the recipient has not received yet is dropped."""
        return await streams.abort_stream(stream_id, reason)

    @tool(title="Stream status", read_only=True)
    async def stream_status(stream_id: StreamId) -> StreamInfo:
        """Chunks sent, received and acked, and whether the stream is open, closed or aborted."""
        return await streams.stream_status(stream_id)

    @tool(title="Message history", read_only=True)
    async def history(
        peer: SessionRef | None = None,
        protocol: ProtocolName | None = None,
        direction: Annotated[str | None, Field(strict=True, pattern="^(sent|received)$")] = None,
        since: Seconds = None,
        until: Seconds = None,
        limit: PageLimit = 20,
        cursor: Cursor = None,
    ) -> HistoryResult:
        """Your own sent and received messages still kept (acked ones too), newest first, with each
        recipient's delivery state. Paginated."""
        return await past.history(peer, protocol, direction, since, until, limit, cursor)

    @tool(title="Replay a message")
    async def replay_message(
        message_id: MessageId,
        to_self: Annotated[bool, Field(strict=True, description="send the copy to yourself")] = False,
    ) -> ReplayResult:
        """Send a copy of a message from your history again, marked with replay_of: to its recipients
        (a message you sent) or to yourself. The copy has its own id and receipts."""
        return await past.replay_message(message_id, to_self)
