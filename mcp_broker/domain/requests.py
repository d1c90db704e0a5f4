"""Request and reply: a request is a send that waits for its typed answer; reply answers one received."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio

from ..errors import InvalidArgument, UnknownMessage
from ..models import Priority, ReplyResult, RequestResult, SessionStatus
from ..store.contract import NewMessage, Notifier, Store, Target
from .binding import Binding
from .catalog import Catalog
from .checks import RECHECK_SECONDS, check_message_ids, check_wait
from .failures import maps_store_errors
from .inbox import to_received
from .messaging import Messaging
from .presence import Presence
from .rates import RateLimiter
from .sessions import Sessions


@maps_store_errors
class Requests:
    """Ask and wait, keep waiting, and answer: one reply per request, acked with it."""

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        binding: Binding,
        catalog: Catalog,
        sessions: Sessions,
        messaging: Messaging,
        presence: Presence,
        limiter: RateLimiter,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.binding = binding
        self.catalog = catalog
        self.sessions = sessions
        self.messaging = messaging
        self.presence = presence
        self.limiter = limiter
        self.clock = clock
        self.recheck_seconds = RECHECK_SECONDS

    async def request(
        self,
        to: str,
        protocol: str,
        payload: Any,
        timeout_seconds: float = 30.0,
        version: str | None = None,
    ) -> RequestResult:
        """Send a request and wait for its reply; on timeout, ``await_reply`` picks up the wait later."""
        check_wait(timeout_seconds, "timeout_seconds")
        sent = await self.messaging.send(to, protocol, payload, version, kind="request")
        return await self._wait_reply(sent.message_id, timeout_seconds)

    async def await_reply(self, request_id: str, timeout_seconds: float = 30.0) -> RequestResult:
        me = self.binding.require()
        check_wait(timeout_seconds, "timeout_seconds")
        if (
            not isinstance(request_id, str)
            or not 0 < len(request_id) <= 64
            or not await self.store.sent_request(me, request_id)
        ):
            raise UnknownMessage(f"you sent no request with id {str(request_id)[:64]!r}")
        return await self._wait_reply(request_id, timeout_seconds)

    async def _wait_reply(self, request_id: str, timeout: float) -> RequestResult:
        me = self.binding.require()
        deadline = time.monotonic() + timeout
        while True:
            ticket = self.notifier.ticket()
            row = await self.store.take_reply(me, request_id, self.clock())
            if row is not None:
                self.notifier.notify([])  # the reply was taken and acked
            remaining = deadline - time.monotonic()
            if row is not None or remaining <= 0 or not self.binding.holds(me):
                return RequestResult(
                    request_id=request_id,
                    status="answered" if row else "pending",
                    reply=to_received(row) if row else None,
                    message=(
                        "the reply is in `reply`"
                        if row
                        else f"no reply yet; call await_reply(request_id={request_id!r}) to keep waiting"
                    ),
                )
            with anyio.move_on_after(min(remaining, self.recheck_seconds)):
                await ticket.wait()

    async def reply(self, message_id: str, payload: Any) -> ReplyResult:
        """Answer a request this session received: validated, routed to the requester, the request acked."""
        me = self.binding.require()
        (request_id,) = check_message_ids([message_id])
        request = await self.store.request_for_reply(me, request_id)
        if request is None:
            raise UnknownMessage(
                f"no message {request_id!r} in your inbox; reply answers requests you received"
            )
        if request.kind != "request":
            raise InvalidArgument(
                f"message {request_id} is a {request.kind}, not a request; use send to answer it"
            )
        if request.attempts == 0:
            raise InvalidArgument(f"receive request {request_id} before replying to it")
        proto = await self.catalog.protocol(request.protocol, request.sent_version)
        payload_text = await self.catalog.check_reply(proto, payload)
        requester = await self.sessions.peer(request.sender_id)
        await self.limiter.charge(me)
        now = self.clock()
        message = NewMessage(
            id=str(uuid.uuid4()),
            sender_id=me,
            broadcast=False,
            kind="reply",
            protocol=proto.name,
            version=proto.version,
            payload=payload_text,
            priority=Priority.high.rank,
            created_at=now,
            correlation_id=request_id,
        )
        if not await self.store.reply(me, request_id, message, Target(requester.id)):
            raise InvalidArgument(
                f"request {request_id} was already answered or acked; a request gets one reply"
            )
        self.notifier.notify([requester.id])
        status = "delivered" if self.presence.status_of(requester, now) is SessionStatus.active else "queued"
        return ReplyResult(
            message_id=message.id, request_id=request_id, recipient=requester.name, status=status
        )
