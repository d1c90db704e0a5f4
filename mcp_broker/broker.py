"""The domain: register, discover, connect, negotiate, send, broadcast, receive, ack, disconnect.

A ``Broker`` is one broker process's view of the shared store. It does not know it sits behind MCP:
the tool layer calls these methods and turns ``BrokerError`` into tool errors. The process's bound
session lives here (never in the MCP session, whose id is not stable on every protocol version).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import anyio

from . import adapters, procs, routing, schemas, versions
from .config import Settings
from .doorbell import Doorbell
from .errors import (
    AlreadyConnected,
    CapabilityNotSupported,
    InboxFull,
    InvalidArgument,
    InvalidCursor,
    NameTaken,
    NoCommonVersion,
    NotAccepted,
    NotConnected,
    PayloadInvalid,
    TooLarge,
    TransformFailed,
    UnknownMessage,
    UnknownProtocol,
    UnknownSession,
)
from .models import (
    AckOutcome,
    AckResult,
    AdaptedRoute,
    AdapterInfo,
    BroadcastRecipient,
    BroadcastResult,
    Capability,
    CompatibilityMatrix,
    CompatibilityPair,
    ConnectResult,
    DeadLetter,
    DeadLettersResult,
    DeliveryStatus,
    DisconnectResult,
    DiscoverResult,
    FeatureComparison,
    ListSessionsResult,
    MessageStatus,
    MessageStatusResult,
    NegotiateResult,
    Priority,
    ProtocolCompatibility,
    ProtocolInfo,
    ProtocolMetadata,
    ProtocolSpec,
    ReceivedMessage,
    ReceiveResult,
    RegisterResult,
    ReplyResult,
    RequestResult,
    RequeueOutcome,
    RequeueResult,
    SendResult,
    SessionInfo,
    SessionStatus,
    Skipped,
    Unsupported,
    iso,
)
from .store import AdapterRow, InboxRow, NewMessage, ProtocolRow, SessionRow, SqliteStore, StatusRow, Target

log = logging.getLogger(__name__)

SESSION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SHORT_TEXT_RE = re.compile(r"^[^\x00-\x1f]{1,64}$")
MAX_WAIT_SECONDS = 60.0
RECHECK_SECONDS = 0.25  # the safety net under the doorbell
PRUNE_EVERY = 3600.0


def check_session_name(name: str) -> str:
    if not isinstance(name, str) or not SESSION_NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"session name {str(name)[:40]!r} is not valid: use 1-64 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return name


def check_short_texts(values: Sequence[str], what: str, limit: int = 64) -> list[str]:
    if len(values) > limit:
        raise InvalidArgument(f"at most {limit} {what} are allowed, got {len(values)}")
    for value in values:
        if not isinstance(value, str) or not SHORT_TEXT_RE.fullmatch(value):
            raise InvalidArgument(
                f"{what} must be 1-64 printable characters each; {str(value)[:40]!r} is not"
            )
    return list(dict.fromkeys(values))


class Broker:
    """One broker process: a store, a doorbell, and at most one bound session."""

    def __init__(self, store: SqliteStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.limits = schemas.Limits(
            max_payload_bytes=settings.max_payload_bytes,
            max_schema_bytes=settings.max_schema_bytes,
            max_depth=settings.max_depth,
        )
        self.identity = procs.Identity.current()
        self.owner = uuid.uuid4().hex  # this broker instance, as recorded on the session it holds
        self.doorbell = Doorbell(settings.db, self.owner)
        self.session_id: str | None = None
        self.session_name: str | None = None
        self._protocols: dict[tuple[str, str], ProtocolRow] = {}  # immutable once registered
        self._adapters: dict[tuple[str, str, str], AdapterRow] = {}  # immutable too
        self._validators = schemas.SchemaCache()
        self._inbox_listeners: list[Callable[[], Awaitable[None]]] = []

    # --- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, settings: Settings) -> AsyncIterator[Broker]:
        """Open the store, listen for doorbells and heartbeat; on exit end the session cleanly."""
        store = SqliteStore(settings.db, durability=settings.durability, busy_budget=settings.lock_timeout)
        await store.open()
        broker = cls(store, settings)
        broker.doorbell.open()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(broker.doorbell.listen)
                tg.start_soon(broker._housekeeping)
                tg.start_soon(broker._watch_inbox)
                try:
                    yield broker
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await broker.close()

    async def close(self) -> None:
        try:
            if self.session_id is not None:
                await self.store.end_session(self.session_id, self.owner, time.time())
                log.info("session %s disconnected", self.session_name)
        finally:
            self.session_id = self.session_name = None
            self.doorbell.close()
            await self.store.close()

    def on_inbox_change(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Call ``listener`` whenever a message is stored for the bound session (rings while it runs coalesce)."""
        self._inbox_listeners.append(listener)

    async def _watch_inbox(self) -> None:
        while True:
            await self.doorbell.ticket().wait()
            if self.session_id is None:
                continue
            for listener in list(self._inbox_listeners):
                try:
                    await listener()
                except Exception:
                    log.warning("an inbox listener failed", exc_info=True)

    async def _housekeeping(self) -> None:
        """Heartbeat the bound session, and now and then prune what retention no longer keeps."""
        next_prune = time.monotonic() + random.uniform(5, 60)
        while True:
            await anyio.sleep(self.settings.heartbeat_interval)
            try:
                if self.session_id is not None and not await self.store.heartbeat(
                    self.session_id, self.owner, time.time()
                ):
                    log.warning("session %s was taken over or ended elsewhere; unbinding", self.session_name)
                    self.session_id = self.session_name = None
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY
                    counts = await self.store.prune(before=time.time() - self.settings.retention_days * 86400)
                    if any(counts.values()):
                        log.info("pruned %s", counts)
            except Exception:
                log.exception("housekeeping failed; will retry")

    # --- helpers -----------------------------------------------------------------------------------

    def _require_session(self) -> str:
        if self.session_id is None:
            raise NotConnected("this process has no session; call connect(name, protocols) first")
        return self.session_id

    def status_of(self, row: SessionRow, now: float) -> SessionStatus:
        """Derived, never stored: explicit disconnect, a dead process, or heartbeat age decides."""
        if row.disconnected_at is not None:
            return SessionStatus.disconnected
        if self.process_alive(row) is False:
            return SessionStatus.disconnected
        age = now - row.last_seen
        if age >= self.settings.expire_after:
            return SessionStatus.disconnected
        if age >= self.settings.stale_after:
            return SessionStatus.stale
        return SessionStatus.active

    def process_alive(self, row: SessionRow) -> bool | None:
        if row.host != self.identity.host or row.pid is None:
            return None
        return procs.is_alive(row.pid, row.proc_start)

    def _session_info(self, row: SessionRow, now: float) -> SessionInfo:
        return SessionInfo(
            session_id=row.id,
            name=row.name,
            status=self.status_of(row, now),
            protocols=[ProtocolSpec(**p) for p in row.protocols],
            features=row.features,
            metadata=row.metadata,
            connected_at=iso(row.connected_at),
            last_seen=iso(row.last_seen),
            queue_depth=row.queue_depth,
            host=row.host,
            pid=row.pid,
            process_alive=self.process_alive(row),
        )

    async def _peer(self, ref: str) -> SessionRow:
        _check_ref(ref)
        row = await self.store.find_session(ref)
        if row is None:
            raise UnknownSession(f"no session named {ref[:64]!r}; list_sessions shows who is there")
        return row

    async def _protocol(self, name: str, version: str) -> ProtocolRow:
        key = (name, version)
        row = self._protocols.get(key)
        if row is None:
            row = await self.store.get_protocol(name, version)
            if row is None:
                known = versions.sort_versions_desc(await self.store.protocol_versions(name))
                if known:
                    raise UnknownProtocol(
                        f"no protocol {name!r} {version}; registered versions: {', '.join(reversed(known))}"
                    )
                raise UnknownProtocol(f"no protocol {name!r} is registered; register_protocol it first")
            self._protocols[key] = row
        return row

    async def _versions_of(self, name: str) -> list[str]:
        versions.check_protocol_name(name)
        known = await self.store.protocol_versions(name)
        if not known:
            raise UnknownProtocol(f"no protocol {name!r} is registered; discover_protocols lists what is")
        return known

    @staticmethod
    def _range(row: SessionRow, protocol: str) -> versions.VersionRange | None:
        for spec in row.protocols:
            if spec["name"] == protocol:
                return versions.parse_range(spec["versions"])
        return None

    def _check_payload(self, proto: ProtocolRow, payload: Any) -> str:
        text = schemas.check_json_value(
            payload, what="payload", max_bytes=self.limits.max_payload_bytes, max_depth=self.limits.max_depth
        )
        validator = self._validators.get((proto.name, proto.version), proto.schema)
        schemas.validate_payload(validator, payload, self.limits)
        return text

    # --- protocols ---------------------------------------------------------------------------------

    async def register_protocol(
        self,
        name: str,
        version: str,
        schema: dict[str, Any],
        capabilities: Sequence[str],
        metadata: dict[str, Any] | None = None,
        response_schema: dict[str, Any] | None = None,
    ) -> RegisterResult:
        versions.check_protocol_name(name)
        versions.parse_version(version)
        schema_text = schemas.check_schema(schema, self.limits)
        response_text = (
            schemas.check_schema(response_schema, self.limits) if response_schema is not None else None
        )
        try:
            caps = sorted({Capability(c) for c in capabilities})
        except ValueError as exc:
            raise InvalidArgument(
                f"unknown capability; choose from {', '.join(c.value for c in Capability)}"
            ) from exc
        if not caps:
            raise InvalidArgument(
                "capabilities must name at least one of " + ", ".join(c.value for c in Capability)
            )
        if response_text is not None and Capability.request_response not in caps:
            raise InvalidArgument(
                "response_schema needs the request_response capability; add it or drop the schema"
            )
        try:
            meta = ProtocolMetadata.model_validate(metadata or {})
        except ValueError as exc:  # pydantic's ValidationError
            raise InvalidArgument(
                f"metadata: {exc.errors()[0]['msg'] if hasattr(exc, 'errors') else exc}"
            ) from None
        meta = meta.model_copy(update={"tags": check_short_texts(meta.tags, "tags")})
        meta_json = meta.model_dump(exclude_none=True)
        fingerprint = hashlib.sha256(
            json.dumps(
                [schema_text, [c.value for c in caps], meta_json, response_text], sort_keys=True
            ).encode()
        ).hexdigest()
        row = ProtocolRow(
            name,
            version,
            schema_text,
            [c.value for c in caps],
            meta_json,
            fingerprint,
            time.time(),
            response_text,
        )
        status = await self.store.add_protocol(row)
        if status == "unchanged":
            message = f"{name} {version} was already registered with this exact definition; nothing changed"
        else:
            message = f"registered {name} {version}"
        return RegisterResult(name=name, version=version, status=status, message=message)

    async def register_adapter(
        self, protocol: str, from_version: str, to_version: str, steps: Sequence[dict[str, Any]]
    ) -> RegisterResult:
        """Store a declarative transformation between two registered versions of one protocol."""
        versions.check_protocol_name(protocol)
        versions.parse_version(from_version)
        versions.parse_version(to_version)
        if from_version == to_version:
            raise InvalidArgument("from_version and to_version must differ")
        schemas.check_json_value(
            list(steps), what="steps", max_bytes=self.limits.max_schema_bytes, max_depth=self.limits.max_depth
        )
        parsed = adapters.parse_steps(list(steps))
        source = await self._protocol(protocol, from_version)
        target = await self._protocol(protocol, to_version)
        adapters.check_adapter(parsed, json.loads(source.schema), json.loads(target.schema), self.limits)
        dumped = adapters.dump_steps(parsed)
        fingerprint = hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()
        status = await self.store.add_adapter(
            AdapterRow(protocol, from_version, to_version, dumped, fingerprint, time.time())
        )
        label = f"adapter {protocol} {from_version} -> {to_version}"
        return RegisterResult(
            name=protocol,
            version=f"{from_version}->{to_version}",
            status=status,
            message=f"{label} was already registered with these steps"
            if status == "unchanged"
            else f"registered {label}",
        )

    async def compatibility_matrix(self, protocol: str | None = None) -> CompatibilityMatrix:
        """Across live sessions: which pairs can talk directly, through adapters, or not at all."""
        self._require_session()
        if protocol is not None:
            versions.check_protocol_name(protocol)
        now = time.time()
        live = [
            r
            for r in await self.store.list_sessions()
            if self.status_of(r, now) is not SessionStatus.disconnected
        ]
        names = sorted({p["name"] for r in live for p in r.protocols} if protocol is None else {protocol})
        tables = []
        for name in names:
            speakers = [(r, rng) for r in live if (rng := self._range(r, name)) is not None]
            known = await self.store.protocol_versions(name)
            edges = [(a.from_version, a.to_version) for a in await self.store.list_adapters(name)]
            pairs = []
            for sender, mine in speakers:
                for recipient, theirs in speakers:
                    if sender.id == recipient.id:
                        continue
                    best = versions.highest_common(known, mine, theirs)
                    route = None if best else routing.sending_version(known, mine, theirs, edges)
                    pairs.append(
                        CompatibilityPair(
                            sender=sender.name,
                            recipient=recipient.name,
                            mode="direct" if best else "adapted" if route else "none",
                            path=[best] if best else route.path if route else [],
                        )
                    )
            tables.append(
                ProtocolCompatibility(protocol=name, sessions=[r.name for r, _ in speakers], pairs=pairs)
            )
        return CompatibilityMatrix(protocols=tables)

    async def discover_protocols(
        self,
        name: str | None = None,
        version_range: str | None = None,
        tags: Sequence[str] | None = None,
        capability: str | None = None,
        query: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> DiscoverResult:
        if name is not None:
            versions.check_protocol_name(name)
        wanted = versions.parse_range(version_range) if version_range is not None else None
        wanted_tags = set(check_short_texts(tags or [], "tags"))
        if capability is not None and capability not in Capability.__members__:
            raise InvalidArgument(f"unknown capability {capability[:40]!r}")
        if not 1 <= limit <= 100:
            raise InvalidArgument("limit must be between 1 and 100")
        needle = (query or "").casefold()
        filters = json.dumps([name, version_range, sorted(wanted_tags), capability, query])
        offset = _decode_cursor(cursor, filters) if cursor else 0

        rows = [
            r
            for r in await self.store.list_protocols(name)
            if (wanted is None or wanted.contains(r.version))
            and wanted_tags <= set(r.metadata.get("tags", []))
            and (capability is None or capability in r.capabilities)
            and (
                not needle
                or needle in r.name.casefold()
                or needle in (r.metadata.get("description") or "").casefold()
                or any(needle in t.casefold() for t in r.metadata.get("tags", []))
            )
        ]
        rows.sort(key=lambda r: versions.version_key(r.version), reverse=True)
        rows.sort(key=lambda r: r.name)
        page = rows[offset : offset + limit]
        more = offset + limit < len(rows)
        links: dict[tuple[str, str], list[AdapterInfo]] = {}
        for adapter in await self.store.list_adapters(name) if page else []:
            info = AdapterInfo(
                from_version=adapter.from_version, to_version=adapter.to_version, steps=adapter.steps
            )
            for version in {adapter.from_version, adapter.to_version}:
                links.setdefault((adapter.protocol, version), []).append(info)
        return DiscoverResult(
            protocols=[
                ProtocolInfo(
                    name=r.name,
                    version=r.version,
                    schema=json.loads(r.schema),
                    capabilities=[Capability(c) for c in r.capabilities],
                    metadata=ProtocolMetadata(**r.metadata),
                    response_schema=json.loads(r.response_schema) if r.response_schema else None,
                    adapters=links.get((r.name, r.version), []),
                    registered_at=iso(r.registered_at),
                )
                for r in page
            ],
            next_cursor=_encode_cursor(offset + limit, filters) if more else None,
        )

    # --- sessions ----------------------------------------------------------------------------------

    async def connect(
        self,
        name: str,
        protocols: Sequence[ProtocolSpec | dict[str, Any]],
        features: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ConnectResult:
        check_session_name(name)
        if self.session_id is not None and self.session_name != name:
            raise AlreadyConnected(
                f"this process is connected as {self.session_name!r}; call disconnect first to connect as {name!r}"
            )
        specs = [p if isinstance(p, ProtocolSpec) else ProtocolSpec.model_validate(p) for p in protocols]
        if len(specs) > 64:
            raise InvalidArgument("at most 64 protocols per session")
        seen: set[str] = set()
        for spec in specs:
            versions.check_protocol_name(spec.name)
            versions.parse_range(spec.versions)
            if spec.name in seen:
                raise InvalidArgument(
                    f"protocol {spec.name!r} is listed twice; give one version range per protocol"
                )
            seen.add(spec.name)
        feature_list = check_short_texts(features or [], "features")
        meta_text = schemas.check_json_value(
            metadata or {}, what="metadata", max_bytes=16 * 1024, max_depth=8
        )
        fields = {
            "protocols": json.dumps([s.model_dump() for s in specs]),
            "features": json.dumps(feature_list),
            "metadata": meta_text,
            "owner": self.owner,
            "host": self.identity.host,
            "pid": self.identity.pid,
            "proc_start": self.identity.start,
            "bell": self.doorbell.path,
        }
        now = time.time()
        row, resumed = await self.store.claim_session(
            new_id=str(uuid.uuid4()),
            name=name,
            fields=fields,
            now=now,
            is_live=lambda r: self.status_of(r, time.time()) is not SessionStatus.disconnected,
            on_taken=lambda r: NameTaken(
                f"session {name!r} is held by a live process (pid {r.pid} on {r.host}); pick another name, "
                "or wait until that process exits"
            ),
        )
        self.session_id, self.session_name = row.id, row.name
        if resumed:
            message = (
                f"resumed session {name!r} with {row.queue_depth} waiting messages; call receive to get them"
            )
        else:
            message = f"connected as {name!r}; call receive(wait_seconds=30) to wait for messages"
        return ConnectResult(
            session_id=row.id, name=row.name, resumed=resumed, queue_depth=row.queue_depth, message=message
        )

    async def disconnect(self) -> DisconnectResult:
        session_id = self._require_session()
        row = await self.store.end_session(session_id, self.owner, time.time())
        name = self.session_name or ""
        self.session_id = self.session_name = None
        depth = row.queue_depth if row else 0
        return DisconnectResult(
            session_id=session_id,
            name=name,
            queue_depth=depth,
            message=f"disconnected {name!r}; messages sent to it will queue until a process connects as {name!r} again",
        )

    async def list_sessions(
        self, status: str | None = None, protocol: str | None = None, feature: str | None = None
    ) -> ListSessionsResult:
        self._require_session()
        if status is not None and status not in SessionStatus.__members__:
            raise InvalidArgument("status must be one of active, stale, disconnected")
        now = time.time()
        infos = [self._session_info(r, now) for r in await self.store.list_sessions()]
        return ListSessionsResult(
            sessions=[
                s
                for s in infos
                if (status is None or s.status == status)
                and (protocol is None or any(p.name == protocol for p in s.protocols))
                and (feature is None or feature in s.features)
            ]
        )

    # --- negotiation -------------------------------------------------------------------------------

    async def negotiate(self, peer: str, required_protocols: Sequence[str] | None = None) -> NegotiateResult:
        my_id = self._require_session()
        mine = await self._peer(my_id)
        theirs = await self._peer(peer)
        if theirs.id == my_id:
            raise InvalidArgument("negotiate with another session, not with yourself")
        my_specs = {p["name"]: versions.parse_range(p["versions"]) for p in mine.protocols}
        their_specs = {p["name"]: versions.parse_range(p["versions"]) for p in theirs.protocols}
        required = list(dict.fromkeys(required_protocols or []))
        for name in required:
            versions.check_protocol_name(name)

        agreed: dict[str, str] = {}
        adapted: list[AdaptedRoute] = []
        remembered: list[tuple[str, str, str, str]] = []  # (sender, recipient, protocol, version)
        reasons: list[str] = []
        for name in sorted(my_specs.keys() & their_specs.keys()):
            known = await self.store.protocol_versions(name)
            best = versions.highest_common(known, my_specs[name], their_specs[name])
            if best is not None:
                agreed[name] = best
                remembered += [(my_id, theirs.id, name, best), (theirs.id, my_id, name, best)]
                continue
            edges = [(a.from_version, a.to_version) for a in await self.store.list_adapters(name)]
            out = routing.sending_version(known, my_specs[name], their_specs[name], edges)
            back = routing.sending_version(known, their_specs[name], my_specs[name], edges)
            for route, direction, sender, receiver in (
                (out, "to_peer", my_id, theirs.id),
                (back, "from_peer", theirs.id, my_id),
            ):
                if route is not None:
                    adapted.append(AdaptedRoute(protocol=name, direction=direction, path=route.path))
                    remembered.append((sender, receiver, name, route.sent))
            if out is not None and back is not None:
                agreed[name] = out.sent
            elif name in required or not required:
                reasons.append(
                    f"{name}: no registered version ({', '.join(versions.sort_versions_desc(known)) or 'none'}) "
                    f"is accepted by both you ({my_specs[name]}) and {theirs.name} ({their_specs[name]}), and "
                    f"adapters bridge {'only one way' if out or back else 'neither way'}"
                )
        for name in required:
            if name not in my_specs:
                reasons.append(f"{name}: you did not connect with it; reconnect listing it in protocols")
            elif name not in their_specs:
                reasons.append(f"{name}: {theirs.name} does not speak it")
        if not required and not agreed and not reasons:
            reasons.append(f"you and {theirs.name} have no protocol in common")
        compatible = all(name in agreed for name in required) if required else bool(agreed) and not reasons
        if remembered:
            await self.store.save_agreements(remembered, time.time())
        unsupported = [
            Unsupported(protocol=n, side="mine") for n in sorted(my_specs.keys() - their_specs.keys())
        ]
        unsupported += [
            Unsupported(protocol=n, side="theirs") for n in sorted(their_specs.keys() - my_specs.keys())
        ]
        my_features, their_features = set(mine.features), set(theirs.features)
        return NegotiateResult(
            peer=theirs.name,
            peer_id=theirs.id,
            compatible=compatible,
            agreed=agreed,
            adapted=adapted,
            unsupported=unsupported,
            features=FeatureComparison(
                common=sorted(my_features & their_features),
                only_mine=sorted(my_features - their_features),
                only_theirs=sorted(their_features - my_features),
            ),
            reasons=[] if compatible else reasons,
        )

    # --- messages ----------------------------------------------------------------------------------

    async def _adapt(
        self, proto: ProtocolRow, route: routing.Route, payload: Any, recipient: str
    ) -> Target | None:
        """The payload transformed along the route and checked against the delivered version's schema."""
        if not route.adapted:
            return None
        steps = [adapters.parse_steps((await self._adapter(proto.name, a, b)).steps) for a, b in route.hops]
        labels = [f"{proto.name} {a} -> {b}" for a, b in route.hops]
        adapted = adapters.transform(payload, steps, labels)
        target = await self._protocol(proto.name, route.delivered)
        try:
            text = self._check_payload(target, adapted)
        except (PayloadInvalid, TooLarge) as exc:
            raise TransformFailed(
                f"adapting {proto.name} {route.sent} to {route.delivered} for {recipient} gave a payload the "
                f"target version refuses: {exc.message}"
            ) from None
        return Target("", route.delivered, text, ">".join(route.path))

    async def _adapter(self, protocol: str, from_version: str, to_version: str) -> AdapterRow:
        key = (protocol, from_version, to_version)
        if key not in self._adapters:
            for row in await self.store.list_adapters(protocol):
                self._adapters[(row.protocol, row.from_version, row.to_version)] = row
        return self._adapters[key]

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
        _check_ref(to)
        versions.check_protocol_name(protocol)
        if version is not None:
            versions.parse_version(version)
        ctx = await self.store.send_context(me, to, protocol)
        recipient = ctx.recipient
        if recipient is None:
            raise UnknownSession(f"no session named {to[:64]!r}; list_sessions shows who is there")
        if not ctx.versions:
            raise UnknownProtocol(f"no protocol {protocol!r} is registered; discover_protocols lists what is")
        if version is not None and version not in ctx.versions:
            listed = ", ".join(reversed(versions.sort_versions_desc(ctx.versions)))
            raise UnknownProtocol(f"no protocol {protocol!r} {version}; registered versions: {listed}")
        needed = Capability.request_response if kind == "request" else Capability.point_to_point
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
        version = route.sent
        proto = await self._protocol(protocol, version)
        if needed not in proto.capabilities:
            raise CapabilityNotSupported(
                f"{protocol} {version} does not allow {needed.value}; it allows {', '.join(proto.capabilities)}"
            )
        payload_text = self._check_payload(proto, payload)
        adapted = await self._adapt(proto, route, payload, recipient.name)
        now = time.time()
        message = NewMessage(
            id=str(uuid.uuid4()),
            sender_id=me,
            broadcast=False,
            kind=kind,
            protocol=protocol,
            version=version,
            payload=payload_text,
            priority=_priority(priority),
            created_at=now,
            expires_at=_expiry(now, ttl_seconds),
            correlation_id=_optional_text(correlation_id, "correlation_id", 128),
            reply_to=_optional_text(reply_to, "reply_to", 128),
            idempotency_key=_optional_text(idempotency_key, "idempotency_key", 128),
        )
        status = "delivered" if self.status_of(recipient, now) is SessionStatus.active else "queued"

        def result_for(reached: tuple[str, ...]) -> dict[str, Any]:
            return SendResult(
                message_id=message.id,
                status=status,
                recipient=recipient.name,
                recipient_id=recipient.id,
                protocol=protocol,
                version=version,
                delivered_version=route.delivered,
                adapted_via=route.path if route.adapted else None,
                created_at=iso(now) or "",
                expires_at=iso(message.expires_at),
            ).model_dump(mode="json")

        try:
            outcome = await self.store.enqueue(
                message,
                [
                    dataclasses.replace(adapted, recipient_id=recipient.id)
                    if adapted
                    else Target(recipient.id)
                ],
                max_inbox=self.settings.max_inbox,
                result_for=result_for,
                refuse_full=True,
            )
        except InboxFull as exc:
            raise InboxFull(
                f"{recipient.name}'s inbox holds {exc.details['depth']} waiting messages (limit "
                f"{self.settings.max_inbox}); nothing was stored. Retry after it receives and acks some.",
                **exc.details,
            ) from None
        if outcome.duplicate_result is not None:
            return SendResult.model_validate({**outcome.duplicate_result, "duplicate": True})
        self.doorbell.ring(recipient.bell)
        return SendResult.model_validate(result_for(outcome.delivered_to))

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
        now = time.time()

        edges = [(a.from_version, a.to_version) for a in await self.store.list_adapters(protocol)]
        can_broadcast = {
            r.version
            for r in await self.store.list_protocols(protocol)
            if Capability.broadcast in r.capabilities
        }
        targets: list[tuple[SessionRow, Target]] = []
        skipped: list[Skipped] = []
        for row in sessions:
            status = self.status_of(row, now)
            if row.id == me or (names and row.name not in names) or not features <= set(row.features):
                continue
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
            priority=_priority(priority),
            created_at=now,
            expires_at=_expiry(now, ttl_seconds),
        )
        by_id = {row.id: row for row, _ in targets}

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
            delivery = "delivered" if self.status_of(row, now) is SessionStatus.active else "queued"
            target = next(t for r, t in targets if r.id == recipient_id)
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

    async def receive(
        self,
        max_messages: int = 10,
        wait_seconds: float = 0.0,
        protocol: str | None = None,
        lease_seconds: float = 60.0,
    ) -> ReceiveResult:
        me = self._require_session()
        if not 1 <= max_messages <= 100:
            raise InvalidArgument("max_messages must be between 1 and 100")
        _check_wait(wait_seconds, "wait_seconds")
        if not 1 <= lease_seconds <= 3600:
            raise InvalidArgument("lease_seconds must be between 1 and 3600")
        if protocol is not None:
            versions.check_protocol_name(protocol)
        deadline = time.monotonic() + wait_seconds
        while True:
            ticket = self.doorbell.ticket()
            now = time.time()
            rows = await self.store.lease(
                me,
                limit=max_messages,
                lease_seconds=lease_seconds,
                now=now,
                max_attempts=self.settings.max_attempts,
                protocol=protocol,
            )
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                return ReceiveResult(messages=[_received(r) for r in rows])
            await self.doorbell.wait(ticket, min(remaining, RECHECK_SECONDS))

    async def ack(self, message_ids: Sequence[str]) -> AckResult:
        me = self._require_session()
        ids = _message_ids(message_ids)
        outcome = await self.store.ack(me, ids, time.time())
        unknown = [m for m, state in outcome.items() if state == "unknown"]
        if unknown:
            raise UnknownMessage(
                f"not in your inbox: {', '.join(m[:64] for m in unknown[:10])}; nothing was acked. "
                "Ack only ids that receive returned to this session."
            )
        return AckResult(
            acked=sum(1 for state in outcome.values() if state == "acked"),
            results=[AckOutcome(message_id=m, status=outcome[m]) for m in ids],
        )

    async def release(self, message_ids: Sequence[str], delay_seconds: float = 0.0) -> RequeueResult:
        """Hand leased messages back before their lease ends (a negative ack), visible again after the delay."""
        me = self._require_session()
        ids = _message_ids(message_ids)
        if not 0 <= delay_seconds <= 3600:
            raise InvalidArgument("delay_seconds must be between 0 and 3600")
        outcome = await self.store.requeue(
            me, ids, now=time.time(), from_states=("leased",), delay=delay_seconds, reset_attempts=False
        )
        return _requeue_result(ids, outcome, "in your inbox")

    async def list_dead_letters(self, limit: int = 50, cursor: str | None = None) -> DeadLettersResult:
        me = self._require_session()
        if not 1 <= limit <= 100:
            raise InvalidArgument("limit must be between 1 and 100")
        before = _decode_cursor(cursor, "dead_letters") if cursor else None
        rows = await self.store.dead_letters(me, limit=limit + 1, before_seq=before)
        page = rows[:limit]
        return DeadLettersResult(
            dead_letters=[
                DeadLetter(
                    message_id=r.message_id,
                    sender=r.sender_name,
                    sender_id=r.sender_id,
                    protocol=r.protocol,
                    version=r.version,
                    payload=json.loads(r.payload),
                    created_at=iso(r.created_at) or "",
                    reason=r.reason,
                    attempts=r.attempts,
                    dead_lettered_at=iso(r.updated_at) or "",
                )
                for _, r in page
            ],
            next_cursor=_encode_cursor(page[-1][0], "dead_letters") if len(rows) > limit else None,
        )

    async def replay_dead_letters(self, message_ids: Sequence[str]) -> RequeueResult:
        """Queue dead letters again with a fresh attempt count (and no expiry)."""
        me = self._require_session()
        ids = _message_ids(message_ids)
        outcome = await self.store.requeue(
            me,
            ids,
            now=time.time(),
            from_states=("dead_lettered",),
            reset_attempts=True,
            max_inbox=self.settings.max_inbox,
        )
        self.doorbell.poke()
        return _requeue_result(ids, outcome, "among your dead letters")

    async def message_status(self, message_ids: Sequence[str]) -> MessageStatusResult:
        """Where each message this session sent stands, per recipient."""
        me = self._require_session()
        ids = _message_ids(message_ids)
        rows = await self.store.message_status(me, ids)
        known = await self.store.known_messages(me, ids)
        unknown = [m for m in ids if m not in known]
        if unknown:
            raise UnknownMessage(
                f"you sent no message with id {', '.join(m[:64] for m in unknown[:10])}; "
                "message_status covers only messages this session sent"
            )
        now = time.time()
        by_id: dict[str, list[Any]] = {m: [] for m in ids}
        heads: dict[str, Any] = {}
        for r in rows:
            by_id[r.message_id].append(r)
            heads.setdefault(r.message_id, r)
        result = []
        for message_id in ids:
            deliveries = by_id[message_id]
            head = heads.get(message_id)
            result.append(
                MessageStatus(
                    message_id=message_id,
                    protocol=head.protocol if head else "",
                    version=head.version if head else "",
                    broadcast=head.broadcast if head else True,
                    created_at=(iso(head.created_at) or "") if head else "",
                    deliveries=[_delivery_status(r, now) for r in deliveries],
                )
            )
        return MessageStatusResult(messages=result)

    # --- request / reply -------------------------------------------------------------------------

    async def request(
        self,
        to: str,
        protocol: str,
        payload: Any,
        timeout_seconds: float = 30.0,
        version: str | None = None,
    ) -> RequestResult:
        """Send a request and wait for its reply; on timeout, ``await_reply`` picks up the wait later."""
        _check_wait(timeout_seconds, "timeout_seconds")
        sent = await self.send(to, protocol, payload, version, kind="request")
        return await self._wait_reply(sent.message_id, sent.recipient, timeout_seconds)

    async def await_reply(self, request_id: str, timeout_seconds: float = 30.0) -> RequestResult:
        me = self._require_session()
        _check_wait(timeout_seconds, "timeout_seconds")
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
            row = await self.store.take_reply(me, request_id, time.time())
            remaining = deadline - time.monotonic()
            if row is not None or remaining <= 0:
                return RequestResult(
                    request_id=request_id,
                    status="answered" if row else "pending",
                    reply=_received(row) if row else None,
                    message=(
                        "the reply is in `reply`"
                        if row
                        else f"no reply yet; call await_reply(request_id={request_id!r}) to keep waiting"
                    ),
                )
            await self.doorbell.wait(ticket, min(remaining, RECHECK_SECONDS))

    async def reply(self, message_id: str, payload: Any) -> ReplyResult:
        """Answer a request this session received: validated, routed to the requester, the request acked."""
        me = self._require_session()
        (request_id,) = _message_ids([message_id])
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
        now = time.time()
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

    async def peek_inbox(self, limit: int = 20) -> list[ReceivedMessage]:
        """This session's waiting messages, without leasing them (the ``broker://inbox`` resource)."""
        me = self._require_session()
        return [_received(r) for r in await self.store.peek(me, limit, time.time())]

    async def sessions_view(self) -> list[SessionInfo]:
        now = time.time()
        return [self._session_info(r, now) for r in await self.store.list_sessions()]


# --- small pure helpers ------------------------------------------------------------------------


def _message_ids(message_ids: Sequence[str]) -> list[str]:
    ids = list(dict.fromkeys(message_ids))
    if not 1 <= len(ids) <= 100:
        raise InvalidArgument("give between 1 and 100 message_ids")
    for message_id in ids:
        if not isinstance(message_id, str) or not 0 < len(message_id) <= 64:
            raise InvalidArgument("each message_id is a message id string as returned by send or receive")
    return ids


def _requeue_result(ids: list[str], outcome: dict[str, str], where: str) -> RequeueResult:
    unknown = [m for m, state in outcome.items() if state == "unknown"]
    if unknown:
        raise UnknownMessage(f"not {where}: {', '.join(m[:64] for m in unknown[:10])}; nothing changed")
    return RequeueResult(
        requeued=sum(1 for state in outcome.values() if state == "requeued"),
        results=[RequeueOutcome(message_id=m, status=outcome[m]) for m in ids],
    )


def _delivery_status(row: StatusRow, now: float) -> DeliveryStatus:
    """The state a sender sees: a lapsed lease is queued again; an expiry shows as ``expired``."""
    state = row.state
    if state in ("queued", "leased") and row.expires_at is not None and row.expires_at <= now:
        state = "expired"
    elif state == "leased" and row.visible_at <= now:
        state = "queued"
    elif state == "dead_lettered" and row.reason == "expired":
        state = "expired"
    return DeliveryStatus(
        recipient=row.recipient_name,
        recipient_id=row.recipient_id,
        state=state,
        reason=row.reason,
        attempts=row.attempts,
        delivered_version=row.delivered_version,
        updated_at=iso(row.updated_at) or "",
        acked_at=iso(row.acked_at),
        expires_at=iso(row.expires_at),
    )


def _received(row: InboxRow) -> ReceivedMessage:
    return ReceivedMessage(
        message_id=row.message_id,
        sender=row.sender_name,
        sender_id=row.sender_id,
        protocol=row.protocol,
        version=row.version,
        payload=json.loads(row.payload),
        created_at=iso(row.created_at) or "",
        priority=Priority.from_rank(row.priority),
        delivery_attempt=max(row.attempts, 1),
        lease_expires_at=iso(row.visible_at) or "",
        broadcast=row.broadcast,
        kind=row.kind,
        sent_version=row.sent_version if row.sent_version != row.version else None,
        adapted_via=row.adapted_via.split(">") if row.adapted_via else None,
        correlation_id=row.correlation_id,
        reply_to=row.reply_to,
        expires_at=iso(row.expires_at),
    )


def _priority(name: str) -> int:
    try:
        return Priority(name).rank
    except ValueError:
        raise InvalidArgument("priority must be low, normal or high") from None


def _check_ref(ref: str) -> None:
    if not isinstance(ref, str) or not 0 < len(ref) <= 64:
        raise InvalidArgument("a session is named by its name or its session_id (1-64 characters)")


def _check_wait(seconds: float, what: str) -> None:
    if not 0 <= seconds <= MAX_WAIT_SECONDS:
        raise InvalidArgument(
            f"{what} must be between 0 and {MAX_WAIT_SECONDS:.0f}; call again to wait longer"
        )


def _expiry(now: float, ttl_seconds: float | None) -> float | None:
    if ttl_seconds is None:
        return None
    if not 1 <= ttl_seconds <= 30 * 86400:
        raise InvalidArgument("ttl_seconds must be between 1 and 2592000 (30 days)")
    return now + ttl_seconds


def _optional_text(value: str | None, what: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= limit or "\x00" in value:
        raise InvalidArgument(f"{what} must be 1-{limit} characters without NUL")
    return value


def _broadcast_filter(raw: dict[str, Any] | None) -> tuple[set[str], set[str], set[SessionStatus]]:
    raw = raw or {}
    unknown = set(raw) - {"names", "features", "status"}
    if unknown:
        raise InvalidArgument(f"filter keys are names, features, status; not {', '.join(sorted(unknown))}")
    names = set(check_short_texts(list(raw.get("names") or []), "filter names", limit=1000))
    features = set(check_short_texts(list(raw.get("features") or []), "filter features"))
    status_raw = raw.get("status") or []
    if isinstance(status_raw, str):
        status_raw = [status_raw]
    try:
        statuses = {SessionStatus(s) for s in status_raw}
    except ValueError as exc:
        raise InvalidArgument("filter status must be among active, stale, disconnected") from exc
    return names, features, statuses


def _encode_cursor(offset: int, filters: str) -> str:
    digest = hashlib.sha256(filters.encode()).hexdigest()[:16]
    return base64.urlsafe_b64encode(json.dumps([offset, digest]).encode()).decode()


def _decode_cursor(cursor: str, filters: str) -> int:
    try:
        offset, digest = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        valid = (
            isinstance(offset, int)
            and offset >= 0
            and digest == hashlib.sha256(filters.encode()).hexdigest()[:16]
        )
    except (ValueError, TypeError) as exc:
        raise InvalidCursor("the cursor is not one this broker issued; start again without cursor") from exc
    if not valid:
        raise InvalidCursor("the cursor belongs to another query; repeat the same filters or drop the cursor")
    return int(offset)
