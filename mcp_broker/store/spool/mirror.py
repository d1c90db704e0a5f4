"""What the last snapshots read, kept so a send can be decided while the store is down."""

from __future__ import annotations

from ..contract import AdapterRow, SessionRow, Snapshot, SnapshotQuery


class Mirror:
    """What the last snapshots read, so a send can be decided while the store is down."""

    def __init__(self) -> None:
        self.sessions: dict[str, SessionRow] = {}
        self.names: dict[str, str] = {}
        self.versions: dict[str, dict[str, list[str]]] = {}
        self.adapters: dict[str, list[AdapterRow]] = {}
        self.agreed: dict[str, dict[tuple[str, str], str]] = {}

    def keep(self, query: SnapshotQuery, snap: Snapshot) -> None:
        self.sessions.update(snap.sessions)
        self.names.update({row.name: row.id for row in snap.sessions.values()})
        self.versions.update(snap.versions)
        self.adapters.update(snap.adapters)
        if query.agreed_by is not None:
            self.agreed.setdefault(query.agreed_by, {}).update(snap.agreed)

    def answer(self, query: SnapshotQuery) -> Snapshot | None:
        """The snapshot as last read, or None when it does not hold all the query asks for."""
        sessions = dict(self.sessions) if query.all_sessions else {}
        for sid in query.session_ids:
            if sid in self.sessions:
                sessions[sid] = self.sessions[sid]
        refs = {}
        for ref, is_id in query.session_refs:
            found = ref if is_id else self.names.get(ref)
            if found is None or found not in self.sessions:
                return None
            refs[ref], sessions[found] = found, self.sessions[found]
        names = list(self.versions) if query.protocols is None else list(query.protocols)
        if any(name not in self.versions for name in names):
            return None
        agreed = self.agreed.get(query.agreed_by or "", {})
        return Snapshot(
            sessions=sessions,
            refs=refs,
            versions={n: self.versions[n] for n in names},
            adapters={n: self.adapters.get(n, []) for n in names},
            agreed={k: v for k, v in agreed.items() if k[0] in sessions},
        )
