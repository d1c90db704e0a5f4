"""Protocols and adapters (immutable once stored), sessions, agreements, and the decision snapshot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..contract import (
    AdapterRow,
    Added,
    Conflict,
    Full,
    ProtocolRow,
    SessionClaim,
    SessionRow,
    Snapshot,
    SnapshotQuery,
)
from .base import RedisBase
from .rows import adapter_row, fields, protocol_row, row_json, session_row


def _opt(value: Any) -> str:
    """How an absent value travels to a script."""
    return "" if value is None else str(value)


class Catalog(RedisBase):
    """Protocols and adapters, sessions, and agreements between them."""

    async def add_protocol(self, row: ProtocolRow, *, max_versions: int | None = None) -> Added:
        found = await self._run(
            "add",
            "protocol",
            row.name,
            row.version,
            row.fingerprint,
            row_json(row),
            json.dumps(row.capabilities),
            _opt(max_versions),
        )
        return Added(found)

    async def get_protocol(self, name: str, version: str) -> ProtocolRow | None:
        text = await self._command("HGET", self.keys.protocol_rows(name), version)
        return None if text is None else protocol_row(text)

    async def list_protocols(self, name: str | None = None) -> list[ProtocolRow]:
        rows = [protocol_row(t) for t in await self._run("catalog", "protocol", name or "")]
        return sorted(rows, key=lambda r: (r.name, r.version))

    async def add_adapter(self, row: AdapterRow, *, max_adapters: int | None = None) -> Added:
        found = await self._run(
            "add",
            "adapter",
            row.protocol,
            f"{row.from_version}>{row.to_version}",
            row.fingerprint,
            row_json(row),
            "",
            _opt(max_adapters),
        )
        return Added(found)

    async def list_adapters(self, protocol: str | None = None) -> list[AdapterRow]:
        rows = [adapter_row(t) for t in await self._run("catalog", "adapter", protocol or "")]
        return sorted(rows, key=lambda r: (r.protocol, r.from_version, r.to_version))

    async def snapshot(self, query: SnapshotQuery) -> Snapshot:
        return await self._snapshot(query, with_depth=False)

    async def _snapshot(self, query: SnapshotQuery, *, with_depth: bool) -> Snapshot:
        """Sessions read by id or reference carry a depth only ``with_depth``; ``all_sessions`` always."""
        names = query.protocols
        args: list[Any] = [
            repr(query.now),
            int(with_depth),
            int(query.all_sessions),
            query.agreed_by or "",
        ]
        args += ["*"] if names is None else [len(names), *names]
        args += [len(query.session_ids), *query.session_ids]
        for ref, is_id in query.session_refs:
            args += [ref, int(is_id)]
        sessions, refs, found_versions, found_adapters, agreed = await self._run("snapshot", *args)
        versions: dict[str, dict[str, list[str]]] = {name: {} for name in names or ()}
        for name, flat in found_versions:
            if flat or names is not None:
                versions[name] = {v: json.loads(caps) for v, caps in fields(flat).items()}
        adapters: dict[str, list[AdapterRow]] = {name: [] for name in versions}
        for name, texts in found_adapters:
            if texts:
                adapters[name] = [adapter_row(t) for t in texts]
        rows = {r.id: r for r in map(session_row, sessions)}
        if query.all_sessions:
            rows = dict(sorted(rows.items(), key=lambda item: item[1].name))
        return Snapshot(
            sessions=rows,
            refs=fields(refs),
            versions=versions,
            adapters=adapters,
            agreed={tuple(k.split("\0", 1)): v for k, v in fields(agreed).items()},  # type: ignore[misc]
        )

    async def find_session(self, ref: str, *, is_id: bool, now: float) -> SessionRow | None:
        snap = await self._snapshot(
            SnapshotQuery(session_refs=[(ref, is_id)], protocols=[], now=now), with_depth=True
        )
        found = snap.refs.get(ref)
        return None if found is None else snap.sessions[found]

    async def list_sessions(self, now: float) -> list[SessionRow]:
        snap = await self._snapshot(SnapshotQuery(all_sessions=True, protocols=[], now=now), with_depth=True)
        return list(snap.sessions.values())

    async def claim_session(self, claim: SessionClaim) -> SessionRow:
        found = await self._run(
            "claim",
            claim.new_id,
            claim.name,
            claim.owner,
            claim.host,
            _opt(claim.pid),
            _opt(claim.proc_start),
            claim.protocols,
            claim.features,
            claim.metadata,
            repr(claim.now),
            int(claim.expect_exists),
            _opt(claim.expect_owner),
            _opt(claim.max_sessions),
            _opt(claim.broker_version),
        )
        if found == "conflict":
            raise Conflict(f"session {claim.name!r} changed since it was read")
        if found == "full":
            raise Full(f"the store holds {claim.max_sessions} sessions")
        return session_row(found)

    async def heartbeat(self, session_id: str, owner: str, now: float) -> bool:
        return bool(await self._run("heartbeat", session_id, owner, repr(now)))

    async def end_session(self, session_id: str, owner: str, now: float) -> SessionRow | None:
        found = await self._run("end_session", session_id, owner, repr(now))
        return session_row(found) if found else None

    async def save_agreements(self, agreements: Sequence[tuple[str, str, str, str]], now: float) -> None:
        if agreements:
            await self._run("agree", repr(now), *(part for a in agreements for part in a))
