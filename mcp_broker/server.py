"""The MCP face of the broker: the FastMCP instance, thin tool wrappers and read-only resources.

Each tool declares its parameters with constraints (they appear in its input schema), calls one
``Broker`` method and returns that method's model (its output schema). Refusals surface as tool
errors that start with the stable code; nothing else happens here.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

from fastmcp import FastMCP
from fastmcp.exceptions import NotFoundError, ResourceError, ToolError, ValidationError
from fastmcp.server.middleware import Middleware, MiddlewareContext
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    EmptyResult,
    SubscribeRequestParams,
    ToolAnnotations,
    UnsubscribeRequestParams,
)
from pydantic import Field
from pydantic import ValidationError as PydanticValidationError

from . import __version__
from .broker import MAX_WAIT_SECONDS, Broker
from .errors import BrokerError, NotConnected, UnknownTool
from .models import (
    AckResult,
    BroadcastFilter,
    BroadcastResult,
    CompatibilityMatrix,
    ConnectResult,
    DeadLettersResult,
    DisconnectResult,
    DiscoverResult,
    ListSessionsResult,
    MessageStatusResult,
    NegotiateResult,
    ProtocolMetadata,
    ProtocolSpec,
    ReceiveResult,
    RegisterResult,
    ReplyResult,
    RequestResult,
    RequeueResult,
    SendResult,
)

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

INBOX_URI = "broker://inbox"
INSTRUCTIONS = """\
mcp-broker lets you exchange typed messages with other AI agents on this machine.
1. connect(name, protocols) first: pick a name others can address you by, and list the protocols you
   speak with the versions you accept. Reconnecting with the same name later resumes your inbox.
2. discover_protocols to see message types; register_protocol to add one (name, semver, JSON Schema).
3. list_sessions to see who is there; negotiate(peer) to agree protocol versions with one of them.
4. send(to, protocol, payload) for one peer, broadcast(protocol, payload) for everyone who speaks it.
   Payloads are validated against the protocol's schema; an error says what to fix.
5. receive(wait_seconds=30) waits for messages; process each one, then ack(message_ids).
   Messages you do not ack come back after their lease (delivery_attempt goes up), so ack what you handled;
   release(message_ids) hands one back at once if you cannot handle it now.
6. request(to, protocol, payload) asks and waits for a typed answer; whoever receives a message with
   kind `request` answers it with reply(message_id, payload).
7. message_status(message_ids) tells you whether what you sent was received and acked;
   list_dead_letters / replay_dead_letters show and retry messages to you that were given up on.
Errors start with a stable CODE such as NOT_CONNECTED or UNKNOWN_SESSION, followed by what to do.
"""

ProtocolName = Annotated[
    str, Field(pattern=r"^[a-z][a-z0-9_]*[a-z0-9]$", max_length=64, description="protocol name, e.g. `chat`")
]
SessionRef = Annotated[str, Field(min_length=1, max_length=64, description="a session's name or session_id")]
Version = Annotated[
    str,
    Field(
        pattern=r"^\d+\.\d+\.\d+$",
        max_length=32,
        description="semantic version MAJOR.MINOR.PATCH, e.g. `1.0.0`",
    ),
]
MessageId = Annotated[str, Field(min_length=1, max_length=64)]
PriorityName = Literal["low", "normal", "high"]
TtlSeconds = Annotated[
    float | None,
    Field(ge=1, le=2_592_000, description="expire undelivered after this many seconds (max 30 days)"),
]
CapabilityName = Literal["point_to_point", "broadcast", "request_response", "streaming"]


class ArgumentErrors(Middleware):
    """Arguments that fail the input schema become INVALID_ARGUMENT errors with a readable list; an
    unknown tool name is UNKNOWN_TOOL."""

    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        try:
            return await call_next(context)
        except NotFoundError as exc:
            raise ToolError(
                f"{UnknownTool.code}: {exc}; tools/list shows the tools", log_level=logging.INFO
            ) from exc
        except ValidationError as exc:
            cause = exc.__cause__
            if isinstance(cause, PydanticValidationError):
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
                    for err in cause.errors(include_url=False)[:10]
                )
            else:
                problems = str(exc)[:500]
            raise ToolError(
                f"INVALID_ARGUMENT: {problems}. Check the tool's input schema and retry.",
                log_level=logging.INFO,
            ) from exc


def build_server(broker: Broker) -> FastMCP:
    """The FastMCP server for one broker process, serving an open ``Broker``."""
    mcp = FastMCP(
        "mcp-broker",
        instructions=INSTRUCTIONS,
        version=__version__,
        mask_error_details=True,
        middleware=[ArgumentErrors()],
    )

    def tool(
        *, read_only: bool = False, idempotent: bool = False, destructive: bool = False, title: str
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        """Register a tool whose domain errors become tool errors carrying their stable code."""
        annotations = ToolAnnotations(
            title=title,
            read_only_hint=read_only,
            idempotent_hint=idempotent,
            destructive_hint=destructive,
            open_world_hint=False,
        )

        def register(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                try:
                    return await fn(*args, **kwargs)
                except BrokerError as exc:
                    # A refusal is an answer, not a server fault: log it quietly.
                    raise ToolError(str(exc), log_level=logging.INFO) from exc

            mcp.tool(annotations=annotations)(wrapper)
            return fn

        return register

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
        return await broker.register_protocol(
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
                max_length=64,
                description="ops by JSON Pointer: rename {from,to}, set_default {path,value}, remove {path}, "
                "map_values {path,mapping}, wrap {path}, unwrap {path}",
            ),
        ],
    ) -> RegisterResult:
        """Declare how a payload of one registered version becomes another, so agents on different versions
        can talk: messages are transformed per recipient on delivery. Checked against both schemas; immutable."""
        return await broker.register_adapter(protocol, from_version, to_version, steps)

    @tool(title="Who can talk to whom", read_only=True)
    async def compatibility_matrix(protocol: ProtocolName | None = None) -> CompatibilityMatrix:
        """For live sessions, per protocol: which sender/recipient pairs talk directly, through adapters, or not."""
        return await broker.compatibility_matrix(protocol)

    @tool(title="Discover protocols", read_only=True)
    async def discover_protocols(
        name: ProtocolName | None = None,
        version_range: Annotated[
            str | None, Field(max_length=200, description="e.g. `>=1.0,<2`, `^1.2`, `~1.2`")
        ] = None,
        tags: Annotated[list[str] | None, Field(max_length=32, description="all of these tags")] = None,
        capability: CapabilityName | None = None,
        query: Annotated[
            str | None, Field(max_length=200, description="text in name, description or tags")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
        cursor: Annotated[
            str | None, Field(max_length=200, description="next_cursor of the previous page")
        ] = None,
    ) -> DiscoverResult:
        """Find registered protocols, each with its schema; by name, newest version first. Paginated."""
        return await broker.discover_protocols(name, version_range, tags, capability, query, limit, cursor)

    @tool(title="Connect as a session", idempotent=True)
    async def connect(
        name: Annotated[
            str,
            Field(
                pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                description="the handle other agents address you by; reuse it to resume your inbox",
            ),
        ],
        protocols: Annotated[
            list[ProtocolSpec],
            Field(
                max_length=64,
                description='protocols you speak, e.g. [{"name": "chat", "versions": ">=1.0,<2"}]',
            ),
        ],
        features: Annotated[
            list[str] | None, Field(max_length=64, description="capability strings, e.g. code_review")
        ] = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="small JSON object about you")] = None,
    ) -> ConnectResult:
        """Create this process's session, or resume an earlier one of the same name with its queued messages.

        Every other tool but register_protocol and discover_protocols needs it. A name held by a live
        process is refused."""
        return await broker.connect(name, protocols, features, metadata)

    @tool(title="List sessions", read_only=True)
    async def list_sessions(
        status: Literal["active", "stale", "disconnected"] | None = None,
        protocol: ProtocolName | None = None,
        feature: Annotated[str | None, Field(max_length=64)] = None,
    ) -> ListSessionsResult:
        """Who is on the broker: every session with its status, protocols, features and queue depth."""
        return await broker.list_sessions(status, protocol, feature)

    @tool(title="Negotiate with a peer", idempotent=True)
    async def negotiate(
        peer: SessionRef,
        required_protocols: Annotated[
            list[ProtocolName] | None,
            Field(max_length=64, description="protocols that must have a common version"),
        ] = None,
    ) -> NegotiateResult:
        """Agree protocol versions and compare features with another session.

        Returns the highest version both accept per protocol; later sends to that peer use it."""
        return await broker.negotiate(peer, required_protocols)

    @tool(title="Send a message")
    async def send(
        to: SessionRef,
        protocol: ProtocolName,
        payload: Annotated[Any, Field(description="the message; must match the protocol version's schema")],
        version: Version | None = None,
        correlation_id: Annotated[str | None, Field(max_length=128)] = None,
        reply_to: Annotated[str | None, Field(max_length=128)] = None,
        priority: PriorityName = "normal",
        ttl_seconds: TtlSeconds = None,
        idempotency_key: Annotated[
            str | None, Field(max_length=128, description="repeat-safe: the same key within 24 h sends once")
        ] = None,
    ) -> SendResult:
        """Send one message to one session (by name or id); it is stored durably before this returns.

        Without version, uses the version negotiated with that peer, else the highest both accept.
        Status is `delivered` when the recipient is active, `queued` when it is away."""
        return await broker.send(
            to, protocol, payload, version, correlation_id, reply_to, priority, ttl_seconds, idempotency_key
        )

    @tool(title="Broadcast a message")
    async def broadcast(
        protocol: ProtocolName,
        payload: Annotated[Any, Field(description="the message; must match the protocol version's schema")],
        version: Version | None = None,
        filter: Annotated[
            BroadcastFilter | None,
            Field(description="narrow recipients by names, features (all of them) and status"),
        ] = None,
        priority: PriorityName = "normal",
        ttl_seconds: TtlSeconds = None,
    ) -> BroadcastResult:
        """Send one message to every other session that speaks the protocol at that version (one transaction).

        Lists who got it and who was skipped, with the reason."""
        return await broker.broadcast(
            protocol,
            payload,
            version,
            filter.model_dump(exclude_none=True) if filter else None,
            priority,
            ttl_seconds,
        )

    @tool(title="Receive messages")
    async def receive(
        max_messages: Annotated[int, Field(ge=1, le=100)] = 10,
        wait_seconds: Annotated[
            float, Field(ge=0, le=MAX_WAIT_SECONDS, description="long-poll this long when nothing is waiting")
        ] = 0,
        protocol: ProtocolName | None = None,
        lease_seconds: Annotated[
            float,
            Field(ge=1, le=3600, description="hidden from other receives this long; ack before it ends"),
        ] = 60,
    ) -> ReceiveResult:
        """Lease waiting messages for this session, oldest first within priority; wait up to wait_seconds.

        Ack each message once handled; un-acked ones come back after lease_seconds."""
        return await broker.receive(max_messages, wait_seconds, protocol, lease_seconds)

    @tool(title="Acknowledge messages", idempotent=True)
    async def ack(
        message_ids: Annotated[list[MessageId], Field(min_length=1, max_length=100)],
    ) -> AckResult:
        """Confirm you processed these received messages; they will not be delivered again."""
        return await broker.ack(message_ids)

    @tool(title="Disconnect", idempotent=False)
    async def disconnect() -> DisconnectResult:
        """End this process's session. Messages sent to its name queue until someone connects with it again."""
        return await broker.disconnect()

    @tool(title="Hand messages back", idempotent=True)
    async def release(
        message_ids: Annotated[list[MessageId], Field(min_length=1, max_length=100)],
        delay_seconds: Annotated[
            float, Field(ge=0, le=3600, description="keep them hidden this long before redelivery")
        ] = 0,
    ) -> RequeueResult:
        """Give leased messages back unprocessed (a negative ack) so they are delivered again, now or after a delay.

        The attempt still counts toward max_attempts."""
        return await broker.release(message_ids, delay_seconds)

    @tool(title="Message receipts", read_only=True)
    async def message_status(
        message_ids: Annotated[list[MessageId], Field(min_length=1, max_length=100)],
    ) -> MessageStatusResult:
        """Where messages you sent stand, per recipient: queued, leased, acked, dead_lettered or expired."""
        return await broker.message_status(message_ids)

    @tool(title="List dead letters", read_only=True)
    async def list_dead_letters(
        limit: Annotated[int, Field(ge=1, le=100)] = 50,
        cursor: Annotated[
            str | None, Field(max_length=200, description="next_cursor of the previous page")
        ] = None,
    ) -> DeadLettersResult:
        """Messages to you that were given up on (expired, or not acked after max_attempts), newest first."""
        return await broker.list_dead_letters(limit, cursor)

    @tool(title="Replay dead letters", idempotent=True)
    async def replay_dead_letters(
        message_ids: Annotated[list[MessageId], Field(min_length=1, max_length=100)],
    ) -> RequeueResult:
        """Queue dead letters again for yourself with a fresh attempt count and no expiry."""
        return await broker.replay_dead_letters(message_ids)

    @tool(title="Ask and wait for the answer")
    async def request(
        to: SessionRef,
        protocol: ProtocolName,
        payload: Annotated[Any, Field(description="the request; must match the protocol version's schema")],
        timeout_seconds: Annotated[
            float, Field(ge=0, le=MAX_WAIT_SECONDS, description="how long to wait now")
        ] = 30,
        version: Version | None = None,
    ) -> RequestResult:
        """Send a request (protocol needs request_response) and wait for the reply, validated against its
        response_schema. If it does not come in time, status is `pending`: call await_reply later."""
        return await broker.request(to, protocol, payload, timeout_seconds, version)

    @tool(title="Keep waiting for a reply", read_only=False)
    async def await_reply(
        request_id: MessageId,
        timeout_seconds: Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS)] = 30,
    ) -> RequestResult:
        """Wait again for the reply to a request you sent earlier (also after reconnecting)."""
        return await broker.await_reply(request_id, timeout_seconds)

    @tool(title="Answer a request")
    async def reply(
        message_id: Annotated[
            MessageId, Field(description="the request's message_id, as receive returned it")
        ],
        payload: Annotated[Any, Field(description="the answer; must match the protocol's response_schema")],
    ) -> ReplyResult:
        """Answer a request you received; the reply goes to the requester and the request is acked with it."""
        return await broker.reply(message_id, payload)

    # --- push: resources/subscribe for broker://inbox ---------------------------------------------
    # FastMCP does not serve resources/subscribe itself; we register the SDK handlers by hand. A host
    # that subscribed gets notifications/resources/updated when a message arrives; others pay nothing.
    subscribers: set[Any] = set()

    async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        if params.uri != INBOX_URI:
            raise MCPError(code=INVALID_PARAMS, message=f"only {INBOX_URI} can be subscribed to")
        subscribers.add(ctx.session)
        return EmptyResult()

    async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        subscribers.discard(ctx.session)
        return EmptyResult()

    async def notify_subscribers() -> None:
        for session in list(subscribers):
            try:
                await session.send_resource_updated(INBOX_URI)
            except Exception:  # the host went away; stop writing to it
                subscribers.discard(session)

    mcp._mcp_server.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    mcp._mcp_server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    broker.on_inbox_change(notify_subscribers)

    # --- resources ---------------------------------------------------------------------------------

    @mcp.resource("broker://protocols", mime_type="application/json", description="every registered protocol")
    async def protocols_resource() -> str:
        found = await broker.discover_protocols(limit=100)
        rows = [p.model_dump(mode="json", exclude={"json_schema"}) for p in found.protocols]
        return json.dumps({"protocols": rows, "next_cursor": found.next_cursor})

    @mcp.resource(
        "broker://protocols/{name}/{version}",
        mime_type="application/schema+json",
        description="a protocol's schema",
    )
    async def protocol_schema(name: str, version: str) -> str:
        try:
            found = await broker.discover_protocols(name=name, version_range=f"=={version}", limit=1)
        except BrokerError as exc:
            raise ResourceError(str(exc)) from exc
        if not found.protocols:
            raise ResourceError(f"UNKNOWN_PROTOCOL: no protocol {name!r} {version}")
        return json.dumps(found.protocols[0].json_schema)

    @mcp.resource(
        "broker://sessions", mime_type="application/json", description="every session and its status"
    )
    async def sessions_resource() -> str:
        sessions = await broker.sessions_view()
        return json.dumps({"sessions": [s.model_dump(mode="json") for s in sessions]})

    @mcp.resource(
        INBOX_URI, mime_type="application/json", description="this session's waiting messages (a peek)"
    )
    async def inbox_resource() -> str:
        try:
            messages = await broker.peek_inbox()
        except NotConnected as exc:
            raise ResourceError(str(exc)) from exc
        return json.dumps({"messages": [m.model_dump(mode="json") for m in messages]})

    return mcp
