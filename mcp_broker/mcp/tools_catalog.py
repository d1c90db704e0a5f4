"""Tools for protocols and adapters: register, discover, and who can talk to whom."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from ..domain import Broker, checks
from ..models import CompatibilityMatrix, DiscoverResult, ProtocolMetadata, RegisterResult
from .params import CapabilityName, Cursor, PageLimit, ProtocolName, Version


def register(tool: Any, broker: Broker) -> None:
    # Long on purpose: the group's tools are closures over the part they call; one registration per group.
    catalog = broker.catalog

    @tool(title="Register a protocol", idempotent=True)
    async def register_protocol(
        name: ProtocolName,
        version: Version,
        schema: Annotated[
            dict[str, Any], Field(description="JSON Schema (Draft 2020-12 by default) for payloads")
        ],
        capabilities: Annotated[
            list[CapabilityName], Field(min_length=1, max_length=4, description="how messages may be sent")
        ],
        metadata: ProtocolMetadata | None = None,
        response_schema: Annotated[
            dict[str, Any] | None,
            Field(description="for request_response protocols: the JSON Schema replies must match"),
        ] = None,
    ) -> RegisterResult:
        """Register a typed message protocol: a name, a semantic version and a JSON Schema for payloads.

        (name, version) is immutable: registering the identical definition again changes nothing; a
        different definition needs a new version. Works without a session."""
        return await catalog.register_protocol(
            name, version, schema, capabilities, metadata.model_dump() if metadata else None, response_schema
        )

    @tool(title="Register a version adapter", idempotent=True)
    async def register_adapter(
        protocol: ProtocolName,
        from_version: Version,
        to_version: Version,
        steps: Annotated[
            list[dict[str, Any]],
            Field(
                min_length=1,
                max_length=checks.MAX_ADAPTER_STEPS,
                description="ops by JSON Pointer: rename {from,to}, set_default {path,value}, remove {path}, "
                "map_values {path,mapping}, wrap {path}, unwrap {path}",
            ),
        ],
    ) -> RegisterResult:
        """Declare how a payload of one registered version becomes another, so agents on different versions
        can talk: messages are transformed per recipient on delivery. Checked against both schemas; immutable."""
        return await catalog.register_adapter(protocol, from_version, to_version, steps)

    @tool(title="Who can talk to whom", read_only=True)
    async def compatibility_matrix(protocol: ProtocolName | None = None) -> CompatibilityMatrix:
        """For live sessions, per protocol: which sender/recipient pairs talk directly, through adapters, or not."""
        return await catalog.compatibility_matrix(protocol)

    @tool(title="Discover protocols", read_only=True)
    async def discover_protocols(
        name: ProtocolName | None = None,
        version_range: Annotated[
            str | None, Field(strict=True, max_length=200, description="e.g. `>=1.0,<2`, `^1.2`, `~1.2`")
        ] = None,
        tags: Annotated[list[str] | None, Field(max_length=32, description="all of these tags")] = None,
        capability: CapabilityName | None = None,
        query: Annotated[
            str | None, Field(strict=True, max_length=200, description="text in name, description or tags")
        ] = None,
        limit: PageLimit = 20,
        cursor: Cursor = None,
    ) -> DiscoverResult:
        """Find registered protocols, each with its schema; by name, newest version first. Paginated."""
        return await catalog.discover_protocols(name, version_range, tags, capability, query, limit, cursor)
