"""Whether a session is there: its status, derived from heartbeats and, on this host, its process."""

from __future__ import annotations

from typing import Protocol

from .. import procs
from ..config import Settings
from ..models import ProtocolSpec, SessionInfo, SessionStatus, iso
from ..store.contract import SessionRow


class LivenessProbe(Protocol):
    def alive(self, row: SessionRow) -> bool | None:
        """True or False where it can tell (a process on this host), None where only heartbeats can."""
        ...


class LocalProcesses:
    """Checks the recorded pid and start time of sessions on this host; others are unknown."""

    def __init__(self, identity: procs.Identity) -> None:
        self.identity = identity

    def alive(self, row: SessionRow) -> bool | None:
        if row.host != self.identity.host or row.pid is None:
            return None
        return procs.is_alive(row.pid, row.proc_start)


class Presence:
    """The status rule: explicit disconnect, a dead process, or the heartbeat's age decides."""

    def __init__(self, settings: Settings, probe: LivenessProbe) -> None:
        self.stale_after = settings.stale_after
        self.expire_after = settings.expire_after
        self.probe = probe

    def status_of(self, row: SessionRow, now: float) -> SessionStatus:
        if row.disconnected_at is not None or self.probe.alive(row) is False:
            return SessionStatus.disconnected
        age = now - row.last_seen
        if age >= self.expire_after:
            return SessionStatus.disconnected
        if age >= self.stale_after:
            return SessionStatus.stale
        return SessionStatus.active

    def is_live(self, row: SessionRow, now: float) -> bool:
        return self.status_of(row, now) is not SessionStatus.disconnected

    def info(self, row: SessionRow, now: float) -> SessionInfo:
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
            process_alive=self.probe.alive(row),
            broker_version=row.broker_version,
        )
