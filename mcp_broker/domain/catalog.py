"""Protocols and adapters: register, discover, validate payloads, adapt them between versions."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from .. import adapters, routing, schemas, versions
from ..adapter_checks import check_adapter
from ..errors import (
    InvalidArgument,
    LimitReached,
    PayloadInvalid,
    ProtocolConflict,
    TooLarge,
    TransformFailed,
    UnknownProtocol,
)
from ..lru import Lru
from ..models import (
    AdapterInfo,
    Capability,
    CompatibilityMatrix,
    CompatibilityPair,
    DiscoverResult,
    ProtocolCompatibility,
    ProtocolInfo,
    ProtocolMetadata,
    RegisterResult,
    iso,
)
from ..store.contract import (
    AdapterRow,
    Added,
    ProtocolRow,
    SessionRow,
    Snapshot,
    SnapshotQuery,
    Store,
    Target,
)
from ..text import check_display_text
from .binding import Binding
from .checks import MAX_PAGE, check_range, check_short_texts, decode_cursor, encode_cursor
from .failures import maps_store_errors
from .presence import Presence

INLINE_STEPS = 20_000  # about 10-20 ms of validation: what a payload may take on the event loop
INLINE_SECONDS = 0.02
# Protocol versions (their rows and compiled validators) kept in memory, the most recently used.
CACHED_VERSIONS = 256


def accepted_range(row: SessionRow, protocol: str) -> versions.VersionRange | None:
    """The versions of ``protocol`` this session accepts, or None when it does not speak it."""
    for spec in row.protocols:
        if spec["name"] == protocol:
            return versions.parse_range(spec["versions"])
    return None


def compatibility_tables(
    snap: Snapshot, live: Sequence[SessionRow], protocol: str | None = None
) -> list[ProtocolCompatibility]:
    """Per protocol the ``live`` sessions speak (or just ``protocol``): for every ordered pair of them,
    a common version (direct), a route through the snapshot's adapters (adapted), or none."""
    live = sorted(live, key=lambda r: r.name)
    names = sorted({p["name"] for r in live for p in r.protocols} if protocol is None else {protocol})
    tables = []
    for name in names:
        speakers = [(r, rng) for r in live if (rng := accepted_range(r, name)) is not None]
        known = list(snap.versions.get(name, {}))
        edges = [(a.from_version, a.to_version) for a in snap.adapters.get(name, [])]
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
    return tables


@maps_store_errors
class Catalog:
    """Protocol versions and adapters, cached for the process's life (they are immutable)."""

    def __init__(
        self,
        store: Store,
        binding: Binding,
        presence: Presence,
        clock: Callable[[], float],
        limits: schemas.Limits,
        *,
        max_versions: int | None = None,
        max_adapters: int | None = None,
    ) -> None:
        self.store = store
        # What a validation may spend on the event loop before it moves to a worker thread.
        self._inline = dataclasses.replace(
            limits,
            max_validation_steps=min(limits.max_validation_steps, INLINE_STEPS),
            validation_seconds=min(limits.validation_seconds, INLINE_SECONDS),
            regex_timeout=min(limits.regex_timeout, INLINE_SECONDS),
            regex_budget=min(limits.regex_budget, INLINE_SECONDS),
        )
        self.max_versions = max_versions
        self.max_adapters = max_adapters
        self.binding = binding
        self.presence = presence
        self.clock = clock
        self.limits = limits
        # Both bounded: an agent registering thousands of versions cannot grow the process with them.
        self._protocols: Lru[tuple[str, str], ProtocolRow] = Lru(CACHED_VERSIONS)
        self._validators = schemas.SchemaCache(CACHED_VERSIONS)

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
        # Registering is rare and its checks can be costly (a 64 KiB schema against its meta-schema):
        # they run on a worker thread, so the process's other calls are not held up.
        schema_text = await anyio.to_thread.run_sync(schemas.check_schema, schema, self.limits)
        response_text = (
            await anyio.to_thread.run_sync(schemas.check_schema, response_schema, self.limits)
            if response_schema is not None
            else None
        )
        caps = _capabilities(capabilities)
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
        if meta.description is not None:
            check_display_text(meta.description, "metadata.description", 2000, multiline=True)
        if meta.owner is not None:
            check_display_text(meta.owner, "metadata.owner", 200)
        meta_json = meta.model_dump(exclude_none=True)
        cap_names = [c.value for c in caps]
        fingerprint = _fingerprint([schema_text, cap_names, meta_json, response_text])
        row = ProtocolRow(
            name, version, schema_text, cap_names, meta_json, fingerprint, self.clock(), response_text
        )
        added = await self.store.add_protocol(row, max_versions=self.max_versions)
        if added is Added.full:
            raise LimitReached(
                f"the store holds {self.max_versions} protocol versions (max_protocol_versions); nothing was "
                "stored. Prune, or ask whoever runs the broker to raise the limit."
            )
        if added is Added.conflict:
            raise ProtocolConflict(
                f"{name} {version} is already registered with a different definition; "
                "registered versions are immutable, so bump the version (e.g. to the next minor)."
            )
        if added is Added.unchanged:
            message = f"{name} {version} was already registered with this exact definition; nothing changed"
        else:
            message = f"registered {name} {version}"
        return RegisterResult(name=name, version=version, status=added.value, message=message)

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
        source = await self.protocol(protocol, from_version)
        target = await self.protocol(protocol, to_version)
        await anyio.to_thread.run_sync(
            check_adapter, parsed, json.loads(source.schema), json.loads(target.schema), self.limits
        )
        dumped = adapters.dump_steps(parsed)
        row = AdapterRow(protocol, from_version, to_version, dumped, _fingerprint(dumped), self.clock())
        added = await self.store.add_adapter(row, max_adapters=self.max_adapters)
        if added is Added.full:
            raise LimitReached(
                f"the store holds {self.max_adapters} adapters (max_adapters); nothing was stored. Ask whoever "
                "runs the broker to raise the limit."
            )
        label = f"adapter {protocol} {from_version} -> {to_version}"
        if added is Added.conflict:
            raise ProtocolConflict(
                f"an {label} is already registered with other steps; adapters are immutable like protocols"
            )
        return RegisterResult(
            name=protocol,
            version=f"{from_version}->{to_version}",
            status=added.value,
            message=f"{label} was already registered with these steps"
            if added is Added.unchanged
            else f"registered {label}",
        )

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
        check_range(limit, 1, MAX_PAGE, "limit")
        needle = (query or "").casefold()
        filters = json.dumps([name, version_range, sorted(wanted_tags), capability, query])
        offset = decode_cursor(cursor, filters) if cursor else 0

        rows = [
            r
            for r in await self.store.list_protocols(name)
            if (wanted is None or wanted.contains(r.version))
            and wanted_tags <= set(r.metadata.get("tags", []))
            and (capability is None or capability in r.capabilities)
            and (not needle or _mentions(r, needle))
        ]
        rows.sort(key=lambda r: versions.version_key(r.version), reverse=True)
        rows.sort(key=lambda r: r.name)
        page = rows[offset : offset + limit]
        links: dict[tuple[str, str], list[AdapterInfo]] = {}
        for adapter in await self.store.list_adapters(name) if page else []:
            info = AdapterInfo(
                from_version=adapter.from_version, to_version=adapter.to_version, steps=adapter.steps
            )
            for version in {adapter.from_version, adapter.to_version}:
                links.setdefault((adapter.protocol, version), []).append(info)
        return DiscoverResult(
            protocols=[_info(r, links.get((r.name, r.version), [])) for r in page],
            next_cursor=encode_cursor(offset + limit, filters) if offset + limit < len(rows) else None,
        )

    async def compatibility_matrix(self, protocol: str | None = None) -> CompatibilityMatrix:
        """Across live sessions: which pairs can talk directly, through adapters, or not at all."""
        self.binding.require()
        if protocol is not None:
            versions.check_protocol_name(protocol)
        snap = await self.store.snapshot(
            SnapshotQuery(all_sessions=True, protocols=None if protocol is None else [protocol])
        )
        now = self.clock()
        live = [r for r in snap.sessions.values() if self.presence.is_live(r, now)]
        return CompatibilityMatrix(protocols=compatibility_tables(snap, live, protocol))

    # --- used by the other parts ------------------------------------------------------------

    async def protocol(self, name: str, version: str) -> ProtocolRow:
        """A registered version (cached: versions are immutable), or UNKNOWN_PROTOCOL naming the others."""
        row = self._protocols.get((name, version))
        if row is None:
            row = await self.store.get_protocol(name, version)
            if row is None:
                known = versions.sort_versions_desc(
                    [r.version for r in await self.store.list_protocols(name)]
                )
                if known:
                    raise UnknownProtocol(
                        f"no protocol {name!r} {version}; registered versions: {', '.join(reversed(known))}"
                    )
                raise UnknownProtocol(f"no protocol {name!r} is registered; register_protocol it first")
            self._protocols.put((name, version), row)
        return row

    async def check_payload(self, proto: ProtocolRow, payload: Any) -> str:
        """The payload's JSON text, once it is within limits and valid against the version's schema."""
        text = schemas.check_json_value(
            payload, what="payload", max_bytes=self.limits.max_payload_bytes, max_depth=self.limits.max_depth
        )
        validator = self._validators.get((proto.name, proto.version), proto.schema)
        await self._validate(validator, payload)
        return text

    async def _validate(self, validator: Any, payload: Any) -> None:
        """Validate on the event loop within a small budget; a payload that needs more is validated
        again on a worker thread with the whole budget, so no payload stalls the loop's other calls."""
        try:
            schemas.validate_payload(validator, payload, self._inline)
        except PayloadInvalid as exc:
            if not exc.details.get("over_budget"):
                raise
            await anyio.to_thread.run_sync(schemas.validate_payload, validator, payload, self.limits)

    async def check_reply(self, proto: ProtocolRow, payload: Any) -> str:
        """A reply's JSON text, valid against the version's response_schema where it has one."""
        text = schemas.check_json_value(
            payload,
            what="reply payload",
            max_bytes=self.limits.max_payload_bytes,
            max_depth=self.limits.max_depth,
        )
        if proto.response_schema is not None:
            validator = self._validators.get((proto.name, f"{proto.version}#response"), proto.response_schema)
            await self._validate(validator, payload)
        return text

    async def adapt(
        self,
        proto: ProtocolRow,
        route: routing.Route,
        edges: Sequence[AdapterRow],
        payload: Any,
        recipient: SessionRow,
    ) -> Target:
        """The delivery for ``recipient``: the payload transformed along the route (``edges`` holds
        the protocol's adapters) and checked against the delivered version's schema."""
        if not route.adapted:
            return Target(recipient.id)
        by_hop = {(a.from_version, a.to_version): a for a in edges}
        target = await self.protocol(proto.name, route.delivered)
        steps = [adapters.parse_steps(by_hop[hop].steps) for hop in route.hops]
        labels = [f"{proto.name} {a} -> {b}" for a, b in route.hops]
        adapted = adapters.transform(payload, steps, labels)
        try:
            text = await self.check_payload(target, adapted)
        except (PayloadInvalid, TooLarge) as exc:
            raise TransformFailed(
                f"adapting {proto.name} {route.sent} to {route.delivered} for {recipient.name} gave a payload the "
                f"target version refuses: {exc.message}"
            ) from None
        return Target(recipient.id, route.delivered, text, ">".join(route.path))


def _capabilities(capabilities: Sequence[str]) -> list[Capability]:
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
    return caps


def _fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _mentions(row: ProtocolRow, needle: str) -> bool:
    tags = row.metadata.get("tags", [])
    return (
        needle in row.name.casefold()
        or needle in (row.metadata.get("description") or "").casefold()
        or any(needle in t.casefold() for t in tags)
    )


def _info(row: ProtocolRow, links: list[AdapterInfo]) -> ProtocolInfo:
    return ProtocolInfo(
        name=row.name,
        version=row.version,
        schema=json.loads(row.schema),
        capabilities=[Capability(c) for c in row.capabilities],
        metadata=ProtocolMetadata(**row.metadata),
        response_schema=json.loads(row.response_schema) if row.response_schema else None,
        adapters=links,
        registered_at=iso(row.registered_at),
    )
