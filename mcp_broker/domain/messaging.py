"""Sending: point-to-point, broadcast, and request/reply, each routed to the version a recipient accepts.

Each send reads one snapshot, decides in pure code (route, validate, adapt), then makes one
conditional write that re-checks only what can change meanwhile: the recipient's binding and
accepted versions (its revision), its inbox depth and the idempotency key.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import routing, versions
from ..config import Settings
from ..errors import (
    CapabilityNotSupported,
    InboxFull,
    InvalidArgument,
    NoCommonVersion,
    NotAccepted,
    TransformFailed,
    UnknownProtocol,
)
from ..models import (
    BroadcastRecipient,
    BroadcastResult,
    Capability,
    SendResult,
    SessionStatus,
    Skipped,
    iso,
)
from ..store.contract import (
    Conflict,
    Guard,
    NewMessage,
    Notifier,
    ProtocolRow,
    SessionRow,
    Snapshot,
    SnapshotQuery,
    Store,
    Target,
)
from .binding import Binding
from .catalog import Catalog, accepted_range
from .checks import (
    check_ref,
    check_short_texts,
    expiry,
    is_session_id,
    optional_text,
    priority_rank,
)
from .failures import maps_store_errors
from .presence import Presence
from .rates import RateLimiter
from .sessions import Sessions, unknown_session

SEND_TRIES = 5  # a recipient that keeps reconnecting while we decide


def send_query(me: str, sends: Sequence[tuple[str, str]]) -> SnapshotQuery:
    """What deciding sends ``(to, protocol)`` by ``me`` reads: the sender, each recipient by its
    reference, the protocols' versions and adapters, and what ``me`` agreed with its peers."""
    refs = dict.fromkeys((to, is_session_id(to)) for to, _ in sends)
    protocols = dict.fromkeys(protocol for _, protocol in sends)
    return SnapshotQuery(session_ids=[me], session_refs=list(refs), protocols=list(protocols), agreed_by=me)


@dataclass(frozen=True)
class _Decision:
    message: NewMessage
    target: Target
    recipient: SessionRow
    result: SendResult


@maps_store_errors
class Messaging:
    """Validate, route (through adapters where needed), store durably, then wake the recipient."""

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        binding: Binding,
        catalog: Catalog,
        sessions: Sessions,
        presence: Presence,
        limiter: RateLimiter,
        settings: Settings,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.binding = binding
        self.catalog = catalog
        self.sessions = sessions
        self.presence = presence
        self.limiter = limiter
        self.max_inbox = settings.max_inbox
        self.clock = clock

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
        snapshot: Snapshot | None = None,
    ) -> SendResult:
        """``snapshot``: one read shared by several sends (``batches.send_many``); a retry reads afresh."""
        # Long on purpose: the retry loop around one guarded write reads best whole.
        me = self.binding.require()
        check_ref(to)
        versions.check_protocol_name(protocol)
        if version is not None:
            versions.parse_version(version)
        query = send_query(me, [(to, protocol)])
        options = dict(
            correlation_id=optional_text(correlation_id, "correlation_id"),
            reply_to=optional_text(reply_to, "reply_to"),
            idempotency_key=optional_text(idempotency_key, "idempotency_key"),
            priority=priority_rank(priority),
            kind=kind,
        )
        toll = self.limiter.toll(me)
        for _ in range(SEND_TRIES):
            snap = snapshot if snapshot is not None else await self.store.snapshot(query)
            snapshot = None
            decided = await self._decide(snap, me, to, protocol, payload, version, ttl_seconds, options)
            try:
                outcome = await self.store.enqueue(
                    decided.message,
                    [decided.target],
                    max_inbox=self.max_inbox,
                    refuse_full=True,
                    answer=decided.result.model_dump(mode="json")
                    if decided.message.idempotency_key
                    else None,
                    guard=Guard(decided.recipient.id, decided.recipient.revision),
                    rate=toll,  # charged with the store, so a decision tried again is charged once
                )
            except Conflict:
                continue  # the recipient reconnected meanwhile: decide again on what it accepts now
            break
        else:
            raise Conflict(f"{to!r} kept reconnecting while the send was decided")
        if outcome.duplicate_result is not None:
            return SendResult.model_validate({**outcome.duplicate_result, "duplicate": True})
        self.limiter.refuse(outcome.limited)
        if not outcome.stored:
            (_, depth), *_ = outcome.full
            raise InboxFull(
                f"{decided.recipient.name}'s inbox holds {depth} waiting messages (limit {self.max_inbox}); "
                "nothing was stored. Retry after it receives and acks some.",
                recipient_id=decided.recipient.id,
                depth=depth,
            )
        self.notifier.notify([decided.recipient.id])
        if outcome.spooled:  # the store was unreachable: it waits in this machine's outbox
            return decided.result.model_copy(update={"status": "spooled"})
        return decided.result

    async def _decide(
        self,
        snap: Snapshot,
        me: str,
        to: str,
        protocol: str,
        payload: Any,
        version: str | None,
        ttl_seconds: float | None,
        options: dict[str, Any],
    ) -> _Decision:
        """Route, validate and adapt one send from what the snapshot holds; no write."""
        # Long on purpose: routing, validation and adaptation of one send, in the order the refusals are given.
        recipient_id = snap.refs.get(to)
        if recipient_id is None:
            raise unknown_session(to)
        recipient = snap.sessions[recipient_id]
        sender = snap.sessions.get(me)
        capabilities = snap.versions.get(protocol, {})
        if not capabilities:
            raise UnknownProtocol(f"no protocol {protocol!r} is registered; discover_protocols lists what is")
        if version is not None and version not in capabilities:
            listed = ", ".join(reversed(versions.sort_versions_desc(list(capabilities))))
            raise UnknownProtocol(f"no protocol {protocol!r} {version}; registered versions: {listed}")
        needed = Capability.request_response if options["kind"] == "request" else Capability.point_to_point
        adapters = snap.adapters.get(protocol, [])
        choose = functools.partial(
            routing.choose_route,
            protocol=protocol,
            recipient=recipient.name,
            known=list(capabilities),
            edges=[(a.from_version, a.to_version) for a in adapters],
            theirs=accepted_range(recipient, protocol),
            mine=accepted_range(sender, protocol) if sender else None,
            agreed=snap.agreed.get((recipient.id, protocol)),
            explicit=version,
        )
        try:
            route = choose(allowed=lambda v: needed in capabilities.get(v, []))
        except (NoCommonVersion, NotAccepted):
            # Say "capability" rather than "version" when only the capability stands in the way.
            route = choose()
            allowing = ", ".join(v for v, caps in capabilities.items() if needed in caps) or "none"
            raise CapabilityNotSupported(
                f"{recipient.name} would get {protocol} {route.delivered}, which does not allow {needed.value}; "
                f"versions allowing it: {allowing}"
            ) from None
        proto = await self.catalog.protocol(protocol, route.sent)
        if needed not in proto.capabilities:
            raise CapabilityNotSupported(
                f"{protocol} {route.sent} does not allow {needed.value}; it allows {', '.join(proto.capabilities)}"
            )
        payload_text = await self.catalog.check_payload(proto, payload)
        target = await self.catalog.adapt(proto, route, adapters, payload, recipient)
        now = self.clock()
        message = NewMessage(
            id=str(uuid.uuid4()),
            sender_id=me,
            broadcast=False,
            protocol=protocol,
            version=route.sent,
            payload=payload_text,
            created_at=now,
            expires_at=expiry(now, ttl_seconds),
            **options,
        )
        result = SendResult(
            message_id=message.id,
            status="delivered"
            if self.presence.status_of(recipient, now) is SessionStatus.active
            else "queued",
            recipient=recipient.name,
            recipient_id=recipient.id,
            protocol=protocol,
            version=route.sent,
            delivered_version=route.delivered,
            adapted_via=route.path if route.adapted else None,
            created_at=iso(now) or "",
            expires_at=iso(message.expires_at),
        )
        return _Decision(message, target, recipient, result)

    async def _broadcast_targets(
        self, snap: Snapshot, proto: ProtocolRow, payload: Any, now: float, reach: _Reach
    ) -> None:
        """Each session the filter lets through gets a delivery in a version it accepts (through
        adapters where needed) that allows broadcast, or a line in ``skipped`` saying why not."""
        protocol, version = proto.name, proto.version
        capabilities = snap.versions.get(protocol, {})
        adapters = snap.adapters.get(protocol, [])
        edges = [(a.from_version, a.to_version) for a in adapters]
        can_broadcast = {v for v, caps in capabilities.items() if Capability.broadcast in caps}
        for row in snap.sessions.values():
            if row.id == reach.sender_id or (reach.names and row.name not in reach.names):
                continue
            if not reach.features <= set(row.features):
                continue
            status = reach.status_by_id[row.id] = self.presence.status_of(row, now)
            if reach.statuses and status not in reach.statuses:
                continue
            their_range = accepted_range(row, protocol)
            if their_range is None:
                reach.skipped.append(
                    Skipped(name=row.name, session_id=row.id, reason=f"does not speak {protocol}")
                )
                continue
            route = routing.route_to(version, their_range, edges, can_broadcast.__contains__)
            if route is None:
                reason = (
                    f"accepts {protocol} {their_range}; no adapter leads from {version} to a version there "
                    "that allows broadcast"
                )
                reach.skipped.append(Skipped(name=row.name, session_id=row.id, reason=reason))
                continue
            try:
                reach.targets[row.id] = await self.catalog.adapt(proto, route, adapters, payload, row)
            except TransformFailed as exc:
                reach.skipped.append(Skipped(name=row.name, session_id=row.id, reason=str(exc)))

    async def broadcast(
        self,
        protocol: str,
        payload: Any,
        version: str | None = None,
        filter: dict[str, Any] | None = None,
        priority: str = "normal",
        ttl_seconds: float | None = None,
    ) -> BroadcastResult:
        # Long on purpose: choose the version, validate, pick recipients, store once, report each recipient.
        me = self.binding.require()
        versions.check_protocol_name(protocol)
        names, features, statuses = _broadcast_filter(filter)
        rank = priority_rank(priority)
        snap = await self.store.snapshot(SnapshotQuery(all_sessions=True, protocols=[protocol]))
        capabilities = snap.versions.get(protocol, {})
        if not capabilities:
            raise UnknownProtocol(f"no protocol {protocol!r} is registered; discover_protocols lists what is")
        sender = snap.sessions.get(me)
        if version is None:
            my_range = accepted_range(sender, protocol) if sender else None
            best = versions.highest_common(list(capabilities), *([my_range] if my_range else []))
            if best is None:
                raise NoCommonVersion(f"no registered version of {protocol!r} is in your range {my_range}")
            version = best
        else:
            versions.parse_version(version)
        proto = await self.catalog.protocol(protocol, version)
        if Capability.broadcast not in proto.capabilities:
            raise CapabilityNotSupported(
                f"{protocol} {version} does not allow broadcast; send to each peer instead"
            )
        payload_text = await self.catalog.check_payload(proto, payload)
        now = self.clock()
        reach = _Reach(me, names, features, statuses)
        await self._broadcast_targets(snap, proto, payload, now, reach)
        targets, skipped, status_by_id = reach.targets, reach.skipped, reach.status_by_id
        message = NewMessage(
            id=str(uuid.uuid4()),
            sender_id=me,
            broadcast=True,
            protocol=protocol,
            version=version,
            payload=payload_text,
            priority=rank,
            created_at=now,
            expires_at=expiry(now, ttl_seconds),
        )
        outcome = await self.store.enqueue(
            message,
            list(targets.values()),
            max_inbox=self.max_inbox,
            refuse_full=False,
            rate=self.limiter.toll(me, len(targets)),  # a broadcast costs one per recipient
        )
        self.limiter.refuse(outcome.limited)
        for recipient_id, depth in outcome.full:
            row = snap.sessions[recipient_id]
            reason = f"inbox full ({depth} of {self.max_inbox})"
            skipped.append(Skipped(name=row.name, session_id=row.id, reason=reason))
        self.notifier.notify(outcome.delivered_to)
        recipients = []
        for recipient_id in outcome.delivered_to:
            row, target = snap.sessions[recipient_id], targets[recipient_id]
            recipients.append(
                BroadcastRecipient(
                    name=row.name,
                    session_id=row.id,
                    status="spooled"
                    if outcome.spooled
                    else "delivered"
                    if status_by_id[recipient_id] is SessionStatus.active
                    else "queued",
                    delivered_version=target.version or version,
                    adapted_via=target.adapted_via.split(">") if target.adapted_via else None,
                )
            )
        recipients.sort(key=lambda r: r.name)
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


@dataclass
class _Reach:
    """Who a broadcast is for (the filter) and what choosing them found."""

    sender_id: str
    names: set[str]
    features: set[str]
    statuses: set[SessionStatus]
    targets: dict[str, Target] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    status_by_id: dict[str, SessionStatus] = field(default_factory=dict)


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
