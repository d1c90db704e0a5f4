"""Protocols and adapters: register, discover, and who can talk to whom."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from . import adapters, routing, schemas, versions
from .core import (
    BrokerCore,
    check_short_texts,
    decode_cursor,
    encode_cursor,
)
from .errors import (
    InvalidArgument,
)
from .models import (
    AdapterInfo,
    Capability,
    CompatibilityMatrix,
    CompatibilityPair,
    DiscoverResult,
    ProtocolCompatibility,
    ProtocolInfo,
    ProtocolMetadata,
    RegisterResult,
    SessionStatus,
    iso,
)
from .store import AdapterRow, ProtocolRow


class Protocols(BrokerCore):
    """Register and discover protocol versions and the adapters between them."""

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
            self.clock(),
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
            AdapterRow(protocol, from_version, to_version, dumped, fingerprint, self.clock())
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
        offset = decode_cursor(cursor, filters) if cursor else 0

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
            next_cursor=encode_cursor(offset + limit, filters) if more else None,
        )

    async def compatibility_matrix(self, protocol: str | None = None) -> CompatibilityMatrix:
        """Across live sessions: which pairs can talk directly, through adapters, or not at all."""
        self._require_session()
        if protocol is not None:
            versions.check_protocol_name(protocol)
        now = self.clock()
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
