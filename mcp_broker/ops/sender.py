"""``mcp-broker send --as NAME``: a person's message, sent by a session of its own through the domain.

It is a broker process for one call: it connects as NAME speaking the protocol (every version of it),
sends exactly as the ``send`` tool does (the schema check, the recipient's versions, the inbox limit,
idempotency), then disconnects. A name held by a live process is refused (``NAME_TAKEN``), as for
any connect. When NAME is an earlier session whose process is gone, it is resumed with its own
protocols kept (and this one added), so its inbox stays as it was.
"""

from __future__ import annotations

from typing import Any

from .. import config
from ..domain import Broker
from ..errors import UnknownProtocol


async def send_as(
    settings: config.Settings,
    name: str,
    to: str,
    protocol: str,
    payload: Any,
    *,
    version: str | None = None,
    priority: str = "normal",
    ttl_seconds: float | None = None,
    correlation_id: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """The ``send`` tool's result, as JSON."""
    async with Broker.running(settings) as broker:
        if not await broker.store.list_protocols(protocol):
            raise UnknownProtocol(
                f"no protocol {protocol!r} is registered; `mcp-broker protocols` lists them"
            )
        earlier = await broker.store.find_session(name, is_id=False, now=broker.clock())
        speaks = [dict(p) for p in earlier.protocols] if earlier is not None else []
        if not any(p["name"] == protocol for p in speaks):
            speaks.append({"name": protocol, "versions": "*"})
        features = earlier.features if earlier is not None else ["human"]
        await broker.sessions.connect(name, speaks, features, earlier.metadata if earlier else None)
        result = await broker.messaging.send(
            to, protocol, payload, version, correlation_id, None, priority, ttl_seconds, idempotency_key
        )
        return result.model_dump(mode="json")
