"""The broker's values and tool results: immutable pydantic models and status enums.

Rows become values through ``from_row`` in the store; tools return these models as they are,
so their JSON Schemas are the tools' output schemas.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field


class Capability(StrEnum):
    point_to_point = "point_to_point"
    broadcast = "broadcast"
    request_response = "request_response"
    streaming = "streaming"


class Priority(StrEnum):
    low = "low"
    normal = "normal"
    high = "high"

    @property
    def rank(self) -> int:
        return {"low": 0, "normal": 1, "high": 2}[self.value]

    @classmethod
    def from_rank(cls, rank: int) -> Priority:
        return (cls.low, cls.normal, cls.high)[rank]


class SessionStatus(StrEnum):
    active = "active"
    stale = "stale"
    disconnected = "disconnected"


class DeliveryState(StrEnum):
    queued = "queued"
    leased = "leased"
    acked = "acked"
    dead_lettered = "dead_lettered"


def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC with milliseconds, the one timestamp format users see."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Value(BaseModel):
    model_config = ConfigDict(
        frozen=True, serialize_by_alias=True, validate_by_name=True, validate_by_alias=True
    )


# --- protocols ---------------------------------------------------------------------------------


class ProtocolMetadata(Value):
    description: str | None = Field(default=None, max_length=2000)
    tags: list[str] = Field(default_factory=list, max_length=32)
    owner: str | None = Field(default=None, max_length=200)


class AdapterInfo(Value):
    from_version: str
    to_version: str
    steps: list[dict[str, Any]]


class ProtocolInfo(Value):
    name: str
    version: str
    json_schema: dict[str, Any] = Field(alias="schema")
    capabilities: list[Capability]
    metadata: ProtocolMetadata
    response_schema: dict[str, Any] | None = Field(default=None, description="what replies must match")
    adapters: list[AdapterInfo] = Field(default_factory=list, description="adapters from or to this version")
    registered_at: str | None = None


class RegisterResult(Value):
    name: str
    version: str
    status: str = Field(
        description="`registered`, or `unchanged` when this exact definition was already there"
    )
    message: str


class DiscoverResult(Value):
    protocols: list[ProtocolInfo]
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` for the next page; null at the end"
    )


# --- sessions ----------------------------------------------------------------------------------


class ProtocolSpec(Value):
    """One protocol a session speaks, with the versions it accepts."""

    name: str
    versions: str = "*"


class RateInfo(Value):
    sent_last_minute: int = Field(description="messages it stored in the last 60 s")
    tokens: float = Field(
        description="messages it may send at once now (the bucket refills at rate_per_second)"
    )
    limited: bool = Field(description="true while it cannot send one more")


class SessionInfo(Value):
    session_id: str
    name: str
    status: SessionStatus
    protocols: list[ProtocolSpec]
    features: list[str]
    metadata: dict[str, Any]
    connected_at: str | None
    last_seen: str | None
    queue_depth: int = Field(description="messages waiting or leased in this session's inbox")
    host: str | None = None
    pid: int | None = Field(default=None, description="process id of the broker process holding the session")
    process_alive: bool | None = Field(
        default=None, description="whether the session's process still runs (null when on another host)"
    )
    rate: RateInfo | None = Field(
        default=None, description="how fast it sends, and whether it is being limited"
    )
    broker_version: str | None = Field(default=None, description="the mcp-broker version of its process")


class ConnectResult(Value):
    session_id: str
    name: str
    resumed: bool = Field(
        description="true when an earlier session of this name was taken over with its inbox"
    )
    queue_depth: int
    message: str


class ListSessionsResult(Value):
    sessions: list[SessionInfo]


class DisconnectResult(Value):
    session_id: str
    name: str
    queue_depth: int
    message: str


# --- negotiation -------------------------------------------------------------------------------


class Unsupported(Value):
    protocol: str
    side: str = Field(description="`mine` when only this session speaks it, `theirs` when only the peer does")


class FeatureComparison(Value):
    common: list[str]
    only_mine: list[str]
    only_theirs: list[str]


class AdaptedRoute(Value):
    protocol: str
    direction: str = Field(description="`to_peer` (what you send) or `from_peer` (what they send you)")
    path: list[str] = Field(description="versions the payload passes through, sent version first")


class NegotiateResult(Value):
    peer: str
    peer_id: str
    compatible: bool
    agreed: dict[str, str] = Field(
        description="protocol -> the highest registered version both sides accept (or, through adapters, the "
        "version you send in)"
    )
    adapted: list[AdaptedRoute] = Field(
        default_factory=list, description="protocols spoken only through adapters, with the path each way"
    )
    unsupported: list[Unsupported]
    features: FeatureComparison
    reasons: list[str]


# --- messages ----------------------------------------------------------------------------------


class SendResult(Value):
    message_id: str
    status: str = Field(description="`delivered` (recipient active) or `queued` (stale or offline)")
    recipient: str
    recipient_id: str
    protocol: str
    version: str
    delivered_version: str | None = Field(default=None, description="the version the recipient gets")
    adapted_via: list[str] | None = Field(
        default=None, description="versions an adapter path carried it through"
    )
    created_at: str
    expires_at: str | None = None
    duplicate: bool = Field(
        default=False, description="true when an earlier send with this idempotency_key answered"
    )


class SendManyEntry(Value):
    index: int = Field(description="the item's place in messages, from 0")
    ok: bool
    result: SendResult | None = Field(default=None, description="as send answers, when ok")
    code: str | None = Field(default=None, description="the refusal's code, when not ok")
    error: str | None = Field(default=None, description="the refusal as send would give it")
    retry_after_seconds: float | None = None


class SendManyResult(Value):
    sent: int
    refused: int
    results: list[SendManyEntry] = Field(description="one per item, in their order")


class BroadcastFilter(BaseModel):
    """Who a broadcast goes to, beyond speaking the protocol: every condition given must hold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    names: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=1000
    )
    features: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=64, description="recipients must have all of these"
    )
    status: list[SessionStatus] | None = Field(default=None, description="default: every status")


class BroadcastRecipient(Value):
    name: str
    session_id: str
    status: str
    delivered_version: str | None = None
    adapted_via: list[str] | None = None


class Skipped(Value):
    name: str
    session_id: str
    reason: str


class BroadcastResult(Value):
    message_id: str
    protocol: str
    version: str
    recipient_count: int
    recipients: list[BroadcastRecipient]
    skipped: list[Skipped]
    created_at: str
    expires_at: str | None = None


class ReceivedMessage(Value):
    message_id: str
    sender: str
    sender_id: str
    protocol: str
    version: str
    payload: Any
    created_at: str
    priority: Priority
    delivery_attempt: int = Field(
        description="1 the first time; higher when redelivered after a lease ran out"
    )
    lease_expires_at: str
    broadcast: bool
    kind: str = Field(default="message", description="`message`, `request` (answer it with reply) or `reply`")
    sent_version: str | None = Field(
        default=None, description="the version it was sent in, when an adapter transformed it for you"
    )
    adapted_via: list[str] | None = Field(
        default=None, description="the versions the payload was adapted through"
    )
    correlation_id: str | None = None
    reply_to: str | None = None
    expires_at: str | None = None
    replay_of: str | None = Field(
        default=None, description="a replayed copy: the id of the message it copies"
    )
    stream_id: str | None = Field(
        default=None, description="a stream's chunk (kind `chunk`) or its abort notice"
    )
    stream_seq: int | None = Field(default=None, description="the chunk's place in its stream, from 1")
    last: bool | None = Field(default=None, description="true on a stream's last chunk")


class ReceiveResult(Value):
    messages: list[ReceivedMessage]
    acked: AckResult | None = Field(default=None, description="what `ack` acked, when it was given")


class AckOutcome(Value):
    message_id: str
    status: str = Field(description="`acked`, `already_acked`, `not_received` or `dead_lettered`")


class AckResult(Value):
    acked: int
    results: list[AckOutcome]


class DeadLetter(Value):
    message_id: str
    sender: str
    sender_id: str
    protocol: str
    version: str
    payload: Any
    created_at: str
    reason: str | None = Field(
        description="why it was dead-lettered, e.g. `expired` or `not acked after 5 deliveries`"
    )
    attempts: int
    dead_lettered_at: str


class DeadLettersResult(Value):
    dead_letters: list[DeadLetter]
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` for the next page; null at the end"
    )


class RequeueOutcome(Value):
    message_id: str
    status: str = Field(description="`requeued`, or the state the message was in and stays in")


class RequeueResult(Value):
    requeued: int
    results: list[RequeueOutcome]


class DeliveryStatus(Value):
    recipient: str
    recipient_id: str
    state: str = Field(description="`queued`, `leased`, `acked`, `dead_lettered` or `expired`")
    reason: str | None = None
    attempts: int
    delivered_version: str
    updated_at: str
    acked_at: str | None = None
    expires_at: str | None = None


class MessageStatus(Value):
    message_id: str
    protocol: str
    version: str
    broadcast: bool
    created_at: str
    deliveries: list[DeliveryStatus] = Field(description="one per recipient (several for a broadcast)")


class MessageStatusResult(Value):
    messages: list[MessageStatus]


class RequestResult(Value):
    request_id: str
    status: str = Field(description="`answered` (see reply) or `pending` (call await_reply to keep waiting)")
    reply: ReceivedMessage | None = None
    message: str


class ReplyResult(Value):
    message_id: str
    request_id: str
    recipient: str
    status: str = Field(description="`delivered` (requester active) or `queued`")


class CompatibilityPair(Value):
    sender: str
    recipient: str
    mode: str = Field(description="`direct`, `adapted` or `none`")
    path: list[str] = Field(description="the common version, or the adapter path from the sender's version")


class ProtocolCompatibility(Value):
    protocol: str
    sessions: list[str]
    pairs: list[CompatibilityPair]


class CompatibilityMatrix(Value):
    protocols: list[ProtocolCompatibility]
