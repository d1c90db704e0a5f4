"""Sessions: connect (or resume), disconnect, list, and negotiate with a peer."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from .. import __version__, procs, routing, schemas, versions
from ..errors import AlreadyConnected, InvalidArgument, LimitReached, NameTaken, UnknownSession
from ..models import (
    AdaptedRoute,
    ConnectResult,
    DisconnectResult,
    FeatureComparison,
    ListSessionsResult,
    NegotiateResult,
    ProtocolSpec,
    SessionInfo,
    SessionStatus,
    Unsupported,
)
from ..store.contract import Conflict, Full, SessionClaim, SessionRow, Snapshot, SnapshotQuery, Store
from .binding import Binding
from .checks import (
    MAX_PROTOCOLS_PER_SESSION,
    MAX_SESSION_METADATA_BYTES,
    MAX_SESSION_METADATA_DEPTH,
    check_ref,
    check_session_name,
    check_short_texts,
    is_session_id,
)
from .failures import maps_store_errors
from .presence import Presence
from .rates import RateLimiter

CLAIM_TRIES = 5  # a claim that keeps losing its compare-and-swap to others


def unknown_session(ref: str) -> UnknownSession:
    return UnknownSession(f"no session named {ref[:64]!r}; list_sessions shows who is there")


@maps_store_errors
class Sessions:
    """One agent's presence: this process's bound session and the other sessions it sees."""

    def __init__(
        self,
        store: Store,
        binding: Binding,
        presence: Presence,
        identity: procs.Identity,
        owner: str,
        clock: Callable[[], float],
        *,
        rates: RateLimiter | None = None,
        max_sessions: int | None = None,
    ) -> None:
        self.store = store
        self.binding = binding
        self.presence = presence
        self.identity = identity
        self.owner = owner  # this broker instance, as recorded on the session it holds
        self.clock = clock
        self.rates = rates  # shows each session's sending rate, where rate limits apply
        self.max_sessions = max_sessions

    async def connect(
        self,
        name: str,
        protocols: Sequence[ProtocolSpec | dict[str, Any]],
        features: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ConnectResult:
        # Long on purpose: checks, then the compare-and-swap loop of the claim, then the answer; one story.
        check_session_name(name)
        bound = self.binding.name
        if self.binding.session_id is not None and bound != name:
            raise AlreadyConnected(
                f"this process is connected as {bound!r}; call disconnect first to connect as {name!r}"
            )
        specs = _specs(protocols)
        feature_list = check_short_texts(features or [], "features")
        meta_text = schemas.check_json_value(
            metadata or {},
            what="metadata",
            max_bytes=MAX_SESSION_METADATA_BYTES,
            max_depth=MAX_SESSION_METADATA_DEPTH,
        )
        new_id = str(uuid.uuid4())
        for _ in range(CLAIM_TRIES):
            now = self.clock()
            # Liveness is decided here, outside any transaction; the claim then re-checks the owner.
            existing = await self.store.find_session(name, is_id=False, now=now)
            if existing is not None and existing.owner != self.owner and self.presence.is_live(existing, now):
                raise NameTaken(
                    f"session {name!r} is held by a live process (pid {existing.pid} on {existing.host}); "
                    "pick another name, or wait until that process exits"
                )
            claim = SessionClaim(
                new_id=new_id,
                name=name,
                owner=self.owner,
                host=self.identity.host,
                pid=self.identity.pid,
                proc_start=self.identity.start,
                protocols=json.dumps([s.model_dump() for s in specs]),
                features=json.dumps(feature_list),
                metadata=meta_text,
                now=now,
                expect_exists=existing is not None,
                expect_owner=existing.owner if existing is not None else None,
                max_sessions=self.max_sessions,
                broker_version=__version__,
            )
            try:
                row = await self.store.claim_session(claim)
            except Conflict:
                continue
            except Full:
                raise LimitReached(
                    f"the store holds {self.max_sessions} sessions (max_sessions); nothing was stored. "
                    "Resume an existing name, or ask whoever runs the broker to prune or raise the limit."
                ) from None
            break
        else:
            raise Conflict(f"session {name!r} kept changing while connecting")
        resumed = existing is not None and (
            existing.owner != self.owner or existing.disconnected_at is not None
        )
        await self.binding.bind(row.id, row.name)
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
        session_id = self.binding.require()
        name = self.binding.name or ""
        await self.binding.unbind()
        row = await self.store.end_session(session_id, self.owner, self.clock())
        return DisconnectResult(
            session_id=session_id,
            name=name,
            queue_depth=row.queue_depth if row else 0,
            message=f"disconnected {name!r}; messages sent to it will queue until a process connects as {name!r} again",
        )

    async def end(self) -> None:
        """On the process's way out: end the bound session, if any."""
        session_id = self.binding.session_id
        if session_id is not None:
            await self.binding.unbind()
            await self.store.end_session(session_id, self.owner, self.clock())

    async def heartbeat(self) -> bool:
        """Refresh the bound session; False (and unbound) when it was taken over or ended elsewhere."""
        session_id = self.binding.session_id
        if session_id is None or await self.store.heartbeat(session_id, self.owner, self.clock()):
            return True
        if self.binding.holds(session_id):
            await self.binding.unbind()
        return False

    async def list_sessions(
        self, status: str | None = None, protocol: str | None = None, feature: str | None = None
    ) -> ListSessionsResult:
        self.binding.require()
        if status is not None and status not in SessionStatus.__members__:
            raise InvalidArgument("status must be one of active, stale, disconnected")
        infos = await self.sessions_view()
        return ListSessionsResult(
            sessions=[
                s
                for s in infos
                if (status is None or s.status == status)
                and (protocol is None or any(p.name == protocol for p in s.protocols))
                and (feature is None or feature in s.features)
            ]
        )

    async def sessions_view(self) -> list[SessionInfo]:
        now = self.clock()
        rows = await self.store.list_sessions(now)
        rates = await self.rates.infos() if self.rates is not None else {}
        return [self.presence.info(r, now).model_copy(update={"rate": rates.get(r.id)}) for r in rows]

    async def peer(self, ref: str) -> SessionRow:
        """A session by id (when ``ref`` has an id's shape) or by name; UNKNOWN_SESSION otherwise."""
        check_ref(ref)
        row = await self.store.find_session(ref, is_id=is_session_id(ref), now=self.clock())
        if row is None:
            raise unknown_session(ref)
        return row

    async def negotiate(self, peer: str, required_protocols: Sequence[str] | None = None) -> NegotiateResult:
        my_id = self.binding.require()
        check_ref(peer)
        required = list(dict.fromkeys(required_protocols or []))
        for name in required:
            versions.check_protocol_name(name)
        snap = await self.store.snapshot(
            SnapshotQuery(session_ids=[my_id], session_refs=[(peer, is_session_id(peer))], protocols=None)
        )
        mine = snap.sessions.get(my_id)
        their_id = snap.refs.get(peer)
        if mine is None or their_id is None:
            raise unknown_session(peer if mine is not None else my_id)
        theirs = snap.sessions[their_id]
        if theirs.id == my_id:
            raise InvalidArgument("negotiate with another session, not with yourself")
        outcome = _agree(snap, mine, theirs, required)
        if outcome.remembered:
            await self.store.save_agreements(outcome.remembered, self.clock())
        return outcome.result(mine, theirs, required)


class _Agreement:
    """What negotiation found, protocol by protocol."""

    def __init__(self) -> None:
        self.agreed: dict[str, str] = {}
        self.adapted: list[AdaptedRoute] = []
        self.remembered: list[tuple[str, str, str, str]] = []  # (sender, recipient, protocol, version)
        self.reasons: list[str] = []
        self.my_specs: dict[str, versions.VersionRange] = {}
        self.their_specs: dict[str, versions.VersionRange] = {}

    def result(self, mine: SessionRow, theirs: SessionRow, required: list[str]) -> NegotiateResult:
        for name in required:
            if name not in self.my_specs:
                self.reasons.append(f"{name}: you did not connect with it; reconnect listing it in protocols")
            elif name not in self.their_specs:
                self.reasons.append(f"{name}: {theirs.name} does not speak it")
        if not required and not self.agreed and not self.reasons:
            self.reasons.append(f"you and {theirs.name} have no protocol in common")
        if required:
            compatible = all(name in self.agreed for name in required)
        else:
            compatible = bool(self.agreed) and not self.reasons
        only_mine = sorted(self.my_specs.keys() - self.their_specs.keys())
        only_theirs = sorted(self.their_specs.keys() - self.my_specs.keys())
        my_features, their_features = set(mine.features), set(theirs.features)
        return NegotiateResult(
            peer=theirs.name,
            peer_id=theirs.id,
            compatible=compatible,
            agreed=self.agreed,
            adapted=self.adapted,
            unsupported=[Unsupported(protocol=n, side="mine") for n in only_mine]
            + [Unsupported(protocol=n, side="theirs") for n in only_theirs],
            features=FeatureComparison(
                common=sorted(my_features & their_features),
                only_mine=sorted(my_features - their_features),
                only_theirs=sorted(their_features - my_features),
            ),
            reasons=[] if compatible else self.reasons,
        )


def _agree(snap: Snapshot, mine: SessionRow, theirs: SessionRow, required: list[str]) -> _Agreement:
    """Per protocol both speak: the highest common version, else adapter routes each way."""
    out = _Agreement()
    out.my_specs = {p["name"]: versions.parse_range(p["versions"]) for p in mine.protocols}
    out.their_specs = {p["name"]: versions.parse_range(p["versions"]) for p in theirs.protocols}
    for name in sorted(out.my_specs.keys() & out.their_specs.keys()):
        known = list(snap.versions.get(name, {}))
        my_range, their_range = out.my_specs[name], out.their_specs[name]
        best = versions.highest_common(known, my_range, their_range)
        if best is not None:
            out.agreed[name] = best
            out.remembered += [(mine.id, theirs.id, name, best), (theirs.id, mine.id, name, best)]
            continue
        edges = [(a.from_version, a.to_version) for a in snap.adapters.get(name, [])]
        there = routing.sending_version(known, my_range, their_range, edges)
        back = routing.sending_version(known, their_range, my_range, edges)
        for route, direction, sender, receiver in (
            (there, "to_peer", mine.id, theirs.id),
            (back, "from_peer", theirs.id, mine.id),
        ):
            if route is not None:
                out.adapted.append(AdaptedRoute(protocol=name, direction=direction, path=route.path))
                out.remembered.append((sender, receiver, name, route.sent))
        if there is not None and back is not None:
            out.agreed[name] = there.sent
        elif name in required or not required:
            out.reasons.append(
                f"{name}: no registered version ({', '.join(versions.sort_versions_desc(known)) or 'none'}) "
                f"is accepted by both you ({my_range}) and {theirs.name} ({their_range}), and "
                f"adapters bridge {'only one way' if there or back else 'neither way'}"
            )
    return out


def _specs(protocols: Sequence[ProtocolSpec | dict[str, Any]]) -> list[ProtocolSpec]:
    specs = [p if isinstance(p, ProtocolSpec) else ProtocolSpec.model_validate(p) for p in protocols]
    if len(specs) > MAX_PROTOCOLS_PER_SESSION:
        raise InvalidArgument(f"at most {MAX_PROTOCOLS_PER_SESSION} protocols per session")
    seen: set[str] = set()
    for spec in specs:
        versions.check_protocol_name(spec.name)
        versions.parse_range(spec.versions)
        if spec.name in seen:
            raise InvalidArgument(
                f"protocol {spec.name!r} is listed twice; give one version range per protocol"
            )
        seen.add(spec.name)
    return specs
