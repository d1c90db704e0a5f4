"""Sessions: connect (or resume), disconnect, list, and negotiate with a peer."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from . import routing, schemas, versions
from .core import (
    BrokerCore,
    check_session_name,
    check_short_texts,
)
from .errors import (
    AlreadyConnected,
    InvalidArgument,
    NameTaken,
)
from .models import (
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


class Sessions(BrokerCore):
    """One agent's presence: this process's bound session and the other sessions it sees."""

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
        now = self.clock()
        row, resumed = await self.store.claim_session(
            new_id=str(uuid.uuid4()),
            name=name,
            fields=fields,
            now=now,
            is_live=lambda r: self.status_of(r, self.clock()) is not SessionStatus.disconnected,
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
        row = await self.store.end_session(session_id, self.owner, self.clock())
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
        now = self.clock()
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

    async def sessions_view(self) -> list[SessionInfo]:
        now = self.clock()
        return [self._session_info(r, now) for r in await self.store.list_sessions()]

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
            await self.store.save_agreements(remembered, self.clock())
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
