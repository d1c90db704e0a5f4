"""The broker's shared core: settings, store, doorbell, the bound session, and small helpers.

The domain is split by concern (protocols, sessions, messaging, inbox); each part is a mixin on
``BrokerCore`` and ``Broker`` (in broker.py) puts them together.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import adapters, procs, routing, schemas, versions
from .config import Settings
from .doorbell import Doorbell
from .errors import (
    InvalidArgument,
    InvalidCursor,
    NotConnected,
    PayloadInvalid,
    TooLarge,
    TransformFailed,
    UnknownProtocol,
    UnknownSession,
)
from .models import (
    Priority,
    ProtocolSpec,
    ReceivedMessage,
    SessionInfo,
    SessionStatus,
    iso,
)
from .store import AdapterRow, InboxRow, ProtocolRow, SessionRow, SqliteStore, Target

log = logging.getLogger(__name__)

SESSION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SHORT_TEXT_RE = re.compile(r"^[^\x00-\x1f]{1,64}$")
MAX_WAIT_SECONDS = 60.0
RECHECK_SECONDS = 0.25  # the safety net under the doorbell


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


class BrokerCore:
    """State and helpers every part of the broker shares: the store, the doorbell, the bound session.

    ``clock`` is the wall clock every decision reads (tests move it); deadlines use ``time.monotonic``.
    """

    clock = staticmethod(time.time)
    recheck_seconds = RECHECK_SECONDS  # the safety net under the doorbell

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
        check_ref(ref)
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

    def _cached_protocol(self, name: str, version: str) -> ProtocolRow:
        """A protocol version this process has read before; ``Uncached`` asks the caller to read it."""
        row = self._protocols.get((name, version))
        if row is None:
            raise Uncached(name, version)
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

    async def _adapt(
        self, proto: ProtocolRow, route: routing.Route, payload: Any, recipient: str
    ) -> Target | None:
        """The payload transformed along the route and checked against the delivered version's schema."""
        if not route.adapted:
            return None
        edges = [await self._adapter(proto.name, a, b) for a, b in route.hops]
        target = await self._protocol(proto.name, route.delivered)
        return self._transform(proto, target, route, edges, payload, recipient)

    def _transform(
        self,
        proto: ProtocolRow,
        target: ProtocolRow,
        route: routing.Route,
        edges: list[AdapterRow],
        payload: Any,
        recipient: str,
    ) -> Target:
        """Apply the route's adapters (``edges``, in order) and check the result against ``target``."""
        steps = [adapters.parse_steps(edge.steps) for edge in edges]
        labels = [f"{proto.name} {a} -> {b}" for a, b in route.hops]
        adapted = adapters.transform(payload, steps, labels)
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


class Uncached(Exception):
    """A protocol version is not in this process's cache yet: read it (async), then try again."""

    def __init__(self, name: str, version: str) -> None:
        super().__init__(name, version)
        self.name, self.version = name, version


def to_received(row: InboxRow) -> ReceivedMessage:
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


def check_message_ids(message_ids: Sequence[str]) -> list[str]:
    ids = list(dict.fromkeys(message_ids))
    if not 1 <= len(ids) <= 100:
        raise InvalidArgument("give between 1 and 100 message_ids")
    for message_id in ids:
        if not isinstance(message_id, str) or not 0 < len(message_id) <= 64:
            raise InvalidArgument("each message_id is a message id string as returned by send or receive")
    return ids


def priority_rank(name: str) -> int:
    try:
        return Priority(name).rank
    except ValueError:
        raise InvalidArgument("priority must be low, normal or high") from None


def check_ref(ref: str) -> None:
    if not isinstance(ref, str) or not 0 < len(ref) <= 64:
        raise InvalidArgument("a session is named by its name or its session_id (1-64 characters)")


def check_wait(seconds: float, what: str) -> None:
    if not 0 <= seconds <= MAX_WAIT_SECONDS:
        raise InvalidArgument(
            f"{what} must be between 0 and {MAX_WAIT_SECONDS:.0f}; call again to wait longer"
        )


def expiry(now: float, ttl_seconds: float | None) -> float | None:
    if ttl_seconds is None:
        return None
    if not 1 <= ttl_seconds <= 30 * 86400:
        raise InvalidArgument("ttl_seconds must be between 1 and 2592000 (30 days)")
    return now + ttl_seconds


def optional_text(value: str | None, what: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= limit or "\x00" in value:
        raise InvalidArgument(f"{what} must be 1-{limit} characters without NUL")
    return value


def encode_cursor(offset: int, filters: str) -> str:
    digest = hashlib.sha256(filters.encode()).hexdigest()[:16]
    return base64.urlsafe_b64encode(json.dumps([offset, digest]).encode()).decode()


def decode_cursor(cursor: str, filters: str) -> int:
    try:
        offset, digest = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        valid = (
            isinstance(offset, int)
            and not isinstance(offset, bool)
            and 0 <= offset < 2**62  # an SQLite INTEGER
            and digest == hashlib.sha256(filters.encode()).hexdigest()[:16]
        )
    except (ValueError, TypeError) as exc:
        raise InvalidCursor("the cursor is not one this broker issued; start again without cursor") from exc
    if not valid:
        raise InvalidCursor("the cursor belongs to another query; repeat the same filters or drop the cursor")
    return int(offset)
