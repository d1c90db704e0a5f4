"""Streams: one sender's ordered chunks to one recipient, in a protocol with ``streaming``.

The store numbers the chunks and hands them out one at a time, in order, without gaps (see
``store/features.py``); here a stream is opened on a version both sides accept directly, each chunk
is validated against that version's schema, and a stream whose sender went quiet is aborted.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from .. import versions
from ..config import Settings
from ..errors import (
    CapabilityNotSupported,
    InboxFull,
    InvalidArgument,
    NoCommonVersion,
    StreamNotOpen,
    StreamTooLong,
    TooManyStreams,
    UnknownProtocol,
)
from ..models import Capability, Priority, SessionStatus, iso
from ..models_features import ChunkResult, StreamInfo
from ..store.contract import NewMessage, Notifier, SnapshotQuery, Store, Target
from ..store.features import AppendRefused, StreamRow, StreamState
from .binding import Binding
from .catalog import Catalog, accepted_range
from .checks import check_ref, is_session_id, optional_text
from .failures import maps_store_errors
from .presence import Presence
from .rates import RateLimiter
from .sessions import unknown_session

log = logging.getLogger(__name__)
MAX_REASON = 500


@maps_store_errors
class Streams:
    """Open, append to, close, abort and inspect this session's streams."""

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        binding: Binding,
        catalog: Catalog,
        presence: Presence,
        limiter: RateLimiter,
        settings: Settings,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.binding = binding
        self.catalog = catalog
        self.presence = presence
        self.limiter = limiter
        self.max_open = settings.max_open_streams
        self.max_chunks = settings.max_stream_chunks
        self.max_inbox = settings.max_inbox
        self.idle_seconds = settings.stream_idle_seconds
        self.clock = clock

    async def open_stream(self, to: str, protocol: str, version: str | None = None) -> StreamInfo:
        """A new stream to ``to`` in a version both accept directly (chunks are not adapted)."""
        me = self.binding.require()
        check_ref(to)
        versions.check_protocol_name(protocol)
        if version is not None:
            versions.parse_version(version)
        snap = await self.store.snapshot(
            SnapshotQuery(session_ids=[me], session_refs=[(to, is_session_id(to))], protocols=[protocol])
        )
        recipient_id = snap.refs.get(to)
        if recipient_id is None:
            raise unknown_session(to)
        recipient, sender = snap.sessions[recipient_id], snap.sessions.get(me)
        if recipient.id == me:
            raise InvalidArgument("open a stream to another session, not to yourself")
        capabilities = snap.versions.get(protocol, {})
        if not capabilities:
            raise UnknownProtocol(f"no protocol {protocol!r} is registered; discover_protocols lists what is")
        streamable = [v for v, caps in capabilities.items() if Capability.streaming in caps]
        if not streamable:
            raise CapabilityNotSupported(f"no version of {protocol} allows streaming; register one that does")
        theirs = accepted_range(recipient, protocol)
        mine = accepted_range(sender, protocol) if sender else None
        if theirs is None:
            raise NoCommonVersion(f"{recipient.name} does not speak {protocol}")
        candidates = [version] if version is not None else streamable
        chosen = versions.highest_common(candidates, *[r for r in (theirs, mine) if r is not None])
        if chosen is None or chosen not in streamable:
            allowing = ", ".join(versions.sort_versions_desc(streamable))
            raise NoCommonVersion(
                f"no version of {protocol} that allows streaming ({allowing}) is accepted by you and by "
                f"{recipient.name} ({theirs})"
            )
        now = self.clock()
        row = StreamRow(
            str(uuid.uuid4()), me, recipient.id, protocol, chosen, StreamState.open, None, now, now, 0, 0, 0
        )
        if not await self.store.open_stream(row, max_open=self.max_open):
            raise TooManyStreams(
                f"you hold {self.max_open} open streams (max_open_streams); close or abort one first"
            )
        return self._info(row, recipient.name)

    async def append_chunk(self, stream_id: str, payload: Any, last: bool = False) -> ChunkResult:
        """Validate and store the next chunk; ``last`` closes the stream with it."""
        me = self.binding.require()
        stream = await self._own_open(stream_id, me)
        proto = await self.catalog.protocol(stream.protocol, stream.version)
        payload_text = await self.catalog.check_payload(proto, payload)
        await self.limiter.charge(me)
        now = self.clock()
        message = NewMessage(
            id=str(uuid.uuid4()),
            sender_id=me,
            broadcast=False,
            protocol=stream.protocol,
            version=stream.version,
            payload=payload_text,
            priority=Priority.normal.rank,
            created_at=now,
            kind="chunk",
            stream_id=stream_id,
            last=last,
        )
        outcome = await self.store.append_chunk(
            message, Target(stream.recipient_id), max_chunks=self.max_chunks, max_inbox=self.max_inbox
        )
        if outcome.refused is AppendRefused.too_many_chunks:
            raise StreamTooLong(
                f"stream {stream_id} carries {self.max_chunks} chunks (max_stream_chunks); close it"
            )
        if outcome.refused is AppendRefused.inbox_full:
            raise InboxFull(
                f"the recipient's inbox holds {outcome.depth} waiting messages (limit {self.max_inbox}); "
                "nothing was stored. Retry after it receives and acks some.",
                depth=outcome.depth,
            )
        if outcome.seq is None:
            raise StreamNotOpen(f"stream {stream_id} is not open any more; stream_status says why")
        self.notifier.notify([stream.recipient_id])
        recipient = await self.store.find_session(stream.recipient_id, is_id=True, now=now)
        active = recipient is not None and self.presence.status_of(recipient, now) is SessionStatus.active
        return ChunkResult(
            stream_id=stream_id,
            message_id=message.id,
            seq=outcome.seq,
            last=last,
            status="delivered" if active else "queued",
        )

    async def abort_stream(self, stream_id: str, reason: str) -> StreamInfo:
        """End an open stream without its last chunk; the recipient is told ``reason``."""
        me = self.binding.require()
        reason = optional_text(reason, "reason", MAX_REASON) or ""
        stream = await self._own_open(stream_id, me)
        await self._abort(stream, reason)
        return await self.stream_status(stream_id)

    async def stream_status(self, stream_id: str) -> StreamInfo:
        """Chunks sent, received and acked, and whether the stream is open, closed or aborted."""
        me = self.binding.require()
        stream = await self.store.stream(_check_id(stream_id))
        if stream is None or me not in (stream.sender_id, stream.recipient_id):
            raise StreamNotOpen(f"no stream {stream_id[:64]!r} of yours; open_stream starts one")
        recipient = await self.store.find_session(stream.recipient_id, is_id=True, now=self.clock())
        return self._info(stream, recipient.name if recipient else stream.recipient_id)

    async def abort_idle(self) -> int:
        """Abort the streams whose sender appended nothing for ``stream_idle_seconds``; how many."""
        now = self.clock()
        idle = await self.store.idle_streams(before=now - self.idle_seconds, limit=100)
        for stream in idle:
            await self._abort(stream, f"the sender appended nothing for {self.idle_seconds:g} s")
        return len(idle)

    async def _abort(self, stream: StreamRow, reason: str) -> None:
        now = self.clock()
        notice = NewMessage(
            id=str(uuid.uuid4()),
            sender_id=stream.sender_id,
            broadcast=False,
            protocol=stream.protocol,
            version=stream.version,
            payload=json.dumps({"reason": reason}),
            priority=Priority.high.rank,
            created_at=now,
            kind="stream_abort",
            stream_id=stream.id,
        )
        if await self.store.end_stream(stream.id, stream.sender_id, reason=reason, now=now, notice=notice):
            self.notifier.notify([stream.recipient_id])
            log.info("stream %s aborted: %s", stream.id, reason)

    async def _own_open(self, stream_id: str, me: str) -> StreamRow:
        stream = await self.store.stream(_check_id(stream_id))
        if stream is None or stream.sender_id != me or stream.state is not StreamState.open:
            state = "is not yours" if stream is not None and stream.sender_id != me else "is not open"
            raise StreamNotOpen(
                f"stream {stream_id[:64]!r} {state if stream else 'does not exist'}; open_stream starts one"
            )
        return stream

    @staticmethod
    def _info(stream: StreamRow, recipient_name: str) -> StreamInfo:
        return StreamInfo(
            stream_id=stream.id,
            recipient=recipient_name,
            recipient_id=stream.recipient_id,
            protocol=stream.protocol,
            version=stream.version,
            state=stream.state.value,
            reason=stream.reason,
            chunks=stream.chunks,
            received=stream.received,
            acked=stream.acked,
            opened_at=iso(stream.opened_at) or "",
            last_chunk_at=iso(stream.last_at) or "",
        )


def _check_id(stream_id: str) -> str:
    if not isinstance(stream_id, str) or not 0 < len(stream_id) <= 64:
        raise InvalidArgument("a stream_id is the id open_stream returned")
    return stream_id
