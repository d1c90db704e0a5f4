"""Sending: point-to-point, broadcast, and request/reply, each routed to the version a recipient accepts."""

from __future__ import annotations

import dataclasses
import functools
import time
import uuid
from typing import Any

from . import routing, schemas, versions
from .core import (
    BrokerCore,
    Uncached,
    check_message_ids,
    check_ref,
    check_short_texts,
    check_wait,
    expiry,
    optional_text,
    priority_rank,
    to_received,
)
from .errors import (
    CapabilityNotSupported,
    InboxFull,
    InvalidArgument,
    NoCommonVersion,
    NotAccepted,
    TransformFailed,
    UnknownMessage,
    UnknownProtocol,
    UnknownSession,
)
from .models import (
    BroadcastRecipient,
    BroadcastResult,
    Capability,
    Priority,
    ReplyResult,
    RequestResult,
    SendResult,
    SessionStatus,
    Skipped,
    iso,
)
from .store import NewMessage, Outgoing, SendContext, SessionRow, Target


class Messaging(BrokerCore):
    """Validate, route (through adapters where needed), store durably, then ring the recipient."""

    async def send(
        self,
        to: str,
        protocol: str,
        payload: Any,
        version: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        priority: str = "normal",
        ttl_seconds: float | None = None,
        idempotency_key: str | None = None,
        *,
        kind: str = "message",
    ) -> SendResult:
        me = self._require_session()
        check_ref(to)
        versions.check_protocol_name(protocol)
        if version is not None:
            versions.parse_version(version)
        needed = Capability.request_response if kind == "request" else Capability.point_to_point
        decided: list[tuple[Outgoing, SendResult]] = []  # the last one is what was stored

        def decide(ctx: SendContext) -> Outgoing:
            # Runs inside the send's transaction: only cached protocol rows, no awaiting.
            recipient = ctx.recipient
            if recipient is None:
                raise UnknownSession(f"no session named {to[:64]!r}; list_sessions shows who is there")
            if not ctx.versions:
                raise UnknownProtocol(
                    f"no protocol {protocol!r} is registered; discover_protocols lists what is"
                )
            if version is not None and version not in ctx.versions:
                listed = ", ".join(reversed(versions.sort_versions_desc(ctx.versions)))
                raise UnknownProtocol(f"no protocol {protocol!r} {version}; registered versions: {listed}")
            choose = functools.partial(
                routing.choose_route,
                protocol=protocol,
                recipient=recipient.name,
                known=ctx.versions,
                edges=[(a.from_version, a.to_version) for a in ctx.adapters],
                theirs=self._range(recipient, protocol),
                mine=self._range(ctx.sender, protocol) if ctx.sender else None,
                agreed=ctx.agreed,
                explicit=version,
            )
            try:
                route = choose(allowed=lambda v: needed in ctx.capabilities.get(v, []))
            except (NoCommonVersion, NotAccepted):
                # Say "capability" rather than "version" when only the capability stands in the way.
                route = choose()
                raise CapabilityNotSupported(
                    f"{recipient.name} would get {protocol} {route.delivered}, which does not allow {needed.value}; "
                    f"versions allowing it: {', '.join(v for v, caps in ctx.capabilities.items() if needed in caps) or 'none'}"
                ) from None
            proto = self._cached_protocol(protocol, route.sent)
            if needed not in proto.capabilities:
                raise CapabilityNotSupported(
                    f"{protocol} {route.sent} does not allow {needed.value}; it allows {', '.join(proto.capabilities)}"
                )
            payload_text = self._check_payload(proto, payload)
            target = Target(recipient.id)
            if route.adapted:
                edges = {(a.from_version, a.to_version): a for a in ctx.adapters}
                delivered = self._cached_protocol(protocol, route.delivered)
                hops = [edges[hop] for hop in route.hops]
                adapted = self._transform(proto, delivered, route, hops, payload, recipient.name)
                target = dataclasses.replace(adapted, recipient_id=recipient.id)
            now = self.clock()
            message = NewMessage(
                id=str(uuid.uuid4()),
                sender_id=me,
                broadcast=False,
                kind=kind,
                protocol=protocol,
                version=route.sent,
                payload=payload_text,
                priority=priority_rank(priority),
                created_at=now,
                expires_at=expiry(now, ttl_seconds),
                correlation_id=optional_text(correlation_id, "correlation_id", 128),
                reply_to=optional_text(reply_to, "reply_to", 128),
                idempotency_key=optional_text(idempotency_key, "idempotency_key", 128),
            )
            status = "delivered" if self.status_of(recipient, now) is SessionStatus.active else "queued"
            result = SendResult(
                message_id=message.id,
                status=status,
                recipient=recipient.name,
                recipient_id=recipient.id,
                protocol=protocol,
                version=route.sent,
                delivered_version=route.delivered,
                adapted_via=route.path if route.adapted else None,
                created_at=iso(now) or "",
                expires_at=iso(message.expires_at),
            )
            answer = result.model_dump(mode="json") if message.idempotency_key is not None else {}
            outgoing = Outgoing(message, [target], answer, recipient)
            decided.append((outgoing, result))
            return outgoing

        while True:
            try:
                outgoing, outcome = await self.store.send(
                    me, to, protocol, decide, max_inbox=self.settings.max_inbox
                )
                result = decided[-1][1]
                break
            except Uncached as missing:
                await self._protocol(missing.name, missing.version)  # then decide again, with it cached
            except InboxFull as exc:
                raise InboxFull(
                    f"{decided[-1][0].recipient.name}'s inbox holds {exc.details['depth']} waiting messages "
                    f"(limit {self.settings.max_inbox}); nothing was stored. Retry after it receives and acks some.",
                    **exc.details,
                ) from None
        if outcome.duplicate_result is not None:
            return SendResult.model_validate({**outcome.duplicate_result, "duplicate": True})
        self.doorbell.ring(outgoing.recipient.bell)
        return result

    async def broadcast(
        self,
        protocol: str,
        payload: Any,
        version: str | None = None,
        filter: dict[str, Any] | None = None,
        priority: str = "normal",
        ttl_seconds: float | None = None,
    ) -> BroadcastResult:
        me = self._require_session()
        known = await self._versions_of(protocol)
        sessions = await self.store.list_sessions()
        sender = next((s for s in sessions if s.id == me), None)
        if version is None:
            my_range = self._range(sender, protocol) if sender else None
            best = versions.highest_common(known, *([my_range] if my_range else []))
            if best is None:
                raise NoCommonVersion(f"no registered version of {protocol!r} is in your range {my_range}")
            version = best
        else:
            versions.parse_version(version)
        proto = await self._protocol(protocol, version)
        if Capability.broadcast not in proto.capabilities:
            raise CapabilityNotSupported(
                f"{protocol} {version} does not allow broadcast; send to each peer instead"
            )
        payload_text = self._check_payload(proto, payload)
        names, features, statuses = _broadcast_filter(filter)
        now = self.clock()

        edges = [(a.from_version, a.to_version) for a in await self.store.list_adapters(protocol)]
        can_broadcast = {
            r.version
            for r in await self.store.list_protocols(protocol)
            if Capability.broadcast in r.capabilities
        }
        targets: list[tuple[SessionRow, Target]] = []
        skipped: list[Skipped] = []
        status_by_id: dict[str, SessionStatus] = {}
        for row in sessions:
            if row.id == me or (names and row.name not in names) or not features <= set(row.features):
                continue
            status = status_by_id[row.id] = self.status_of(row, now)
            if statuses and status not in statuses:
                continue
            their_range = self._range(row, protocol)
            route = (
                routing.route_to(version, their_range, edges, can_broadcast.__contains__)
                if their_range
                else None
            )
            if their_range is None:
                skipped.append(Skipped(name=row.name, session_id=row.id, reason=f"does not speak {protocol}"))
            elif route is None:
                reason = (
                    f"accepts {protocol} {their_range}; no adapter leads from {version} to a version there "
                    "that allows broadcast"
                )
                skipped.append(Skipped(name=row.name, session_id=row.id, reason=reason))
            else:
                try:
                    adapted = await self._adapt(proto, route, payload, row.name)
                except TransformFailed as exc:
                    skipped.append(Skipped(name=row.name, session_id=row.id, reason=str(exc)))
                    continue
                target = dataclasses.replace(adapted, recipient_id=row.id) if adapted else Target(row.id)
                targets.append((row, target))

        message = NewMessage(
            id=str(uuid.uuid4()),
            sender_id=me,
            broadcast=True,
            protocol=protocol,
            version=version,
            payload=payload_text,
            priority=priority_rank(priority),
            created_at=now,
            expires_at=expiry(now, ttl_seconds),
        )
        by_id = {row.id: row for row, _ in targets}
        target_by_id = {row.id: target for row, target in targets}

        def result_for(reached: tuple[str, ...]) -> dict[str, Any]:
            return {}

        outcome = await self.store.enqueue(
            message,
            [target for _, target in targets],
            max_inbox=self.settings.max_inbox,
            result_for=result_for,
            refuse_full=False,
        )
        for recipient_id, depth in outcome.full:
            row = by_id[recipient_id]
            skipped.append(
                Skipped(
                    name=row.name,
                    session_id=row.id,
                    reason=f"inbox full ({depth} of {self.settings.max_inbox})",
                )
            )
        recipients = []
        for recipient_id in outcome.delivered_to:
            row = by_id[recipient_id]
            self.doorbell.ring(row.bell)
            delivery = "delivered" if status_by_id[recipient_id] is SessionStatus.active else "queued"
            target = target_by_id[recipient_id]
            recipients.append(
                BroadcastRecipient(
                    name=row.name,
                    session_id=row.id,
                    status=delivery,
                    delivered_version=target.version or version,
                    adapted_via=target.adapted_via.split(">") if target.adapted_via else None,
                )
            )
        return BroadcastResult(
            message_id=message.id,
            protocol=protocol,
            version=version,
            recipient_count=len(recipients),
            recipients=recipients,
            skipped=skipped,
            created_at=iso(now) or "",
            expires_at=iso(message.expires_at),
        )

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
        sent = await self.send(to, protocol, payload, version, kind="request")
        return await self._wait_reply(sent.message_id, sent.recipient, timeout_seconds)

    async def await_reply(self, request_id: str, timeout_seconds: float = 30.0) -> RequestResult:
        me = self._require_session()
        check_wait(timeout_seconds, "timeout_seconds")
        if (
            not isinstance(request_id, str)
            or not 0 < len(request_id) <= 64
            or not await self.store.sent_request(me, request_id)
        ):
            raise UnknownMessage(f"you sent no request with id {str(request_id)[:64]!r}")
        return await self._wait_reply(request_id, None, timeout_seconds)

    async def _wait_reply(self, request_id: str, recipient: str | None, timeout: float) -> RequestResult:
        me = self._require_session()
        deadline = time.monotonic() + timeout
        while True:
            ticket = self.doorbell.ticket()
            row = await self.store.take_reply(me, request_id, self.clock())
            remaining = deadline - time.monotonic()
            if row is not None or remaining <= 0:
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
            await self.doorbell.wait(ticket, min(remaining, self.recheck_seconds))

    async def reply(self, message_id: str, payload: Any) -> ReplyResult:
        """Answer a request this session received: validated, routed to the requester, the request acked."""
        me = self._require_session()
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
        proto = await self._protocol(request.protocol, request.sent_version)
        limits: dict[str, Any] = dict(
            what="reply payload", max_bytes=self.limits.max_payload_bytes, max_depth=self.limits.max_depth
        )
        payload_text = schemas.check_json_value(payload, **limits)
        if proto.response_schema is not None:
            validator = self._validators.get((proto.name, f"{proto.version}#response"), proto.response_schema)
            schemas.validate_payload(validator, payload, self.limits)
        requester = await self._peer(request.sender_id)
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
        self.doorbell.ring(requester.bell)
        status = "delivered" if self.status_of(requester, now) is SessionStatus.active else "queued"
        return ReplyResult(
            message_id=message.id, request_id=request_id, recipient=requester.name, status=status
        )


def _broadcast_filter(raw: dict[str, Any] | None) -> tuple[set[str], set[str], set[SessionStatus]]:
    raw = raw or {}
    unknown = set(raw) - {"names", "features", "status"}
    if unknown:
        raise InvalidArgument(f"filter keys are names, features, status; not {', '.join(sorted(unknown))}")
    names = set(check_short_texts(_text_list(raw.get("names"), "filter names"), "filter names", limit=1000))
    features = set(check_short_texts(_text_list(raw.get("features"), "filter features"), "filter features"))
    try:
        statuses = {SessionStatus(s) for s in _text_list(raw.get("status"), "filter status")}
    except ValueError as exc:
        raise InvalidArgument("filter status must be among active, stale, disconnected") from exc
    return names, features, statuses


def _text_list(value: Any, what: str) -> list[str]:
    """A list of strings; one string counts as a list of one (never as its letters)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{what} must be a list of strings")
    return value
