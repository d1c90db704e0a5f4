"""Tool parameter types, with constraints built from the domain's limits (one source for each).

Numbers, booleans and strings are strict: what the input schema says is what is accepted, so
``"5"`` for a number or ``true`` for seconds is refused instead of coerced.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..domain import checks
from ..domain.batches import MAX_BATCH
from ..versions import PROTOCOL_NAME_PATTERN, VERSION_PATTERN

ProtocolName = Annotated[
    str,
    Field(
        strict=True, pattern=PROTOCOL_NAME_PATTERN, max_length=64, description="protocol name, e.g. `chat`"
    ),
]
SessionName = Annotated[
    str,
    Field(
        strict=True,
        pattern=checks.SESSION_NAME_PATTERN,
        description="the handle other agents address you by; reuse it to resume your inbox",
    ),
]
SessionRef = Annotated[
    str,
    Field(strict=True, min_length=1, max_length=checks.MAX_REF, description="a session's name or session_id"),
]
Version = Annotated[
    str,
    Field(
        strict=True,
        pattern=VERSION_PATTERN,
        max_length=32,
        description="semantic version MAJOR.MINOR.PATCH, e.g. `1.0.0`",
    ),
]
MessageId = Annotated[str, Field(strict=True, min_length=1, max_length=64)]
MessageIds = Annotated[list[MessageId], Field(min_length=1, max_length=checks.MAX_IDS)]
StreamId = Annotated[
    str, Field(strict=True, min_length=1, max_length=64, description="as open_stream returned it")
]
PriorityName = Literal["low", "normal", "high"]
CapabilityName = Literal["point_to_point", "broadcast", "request_response", "streaming"]
ShortText = Annotated[str, Field(strict=True, max_length=64)]
TagText = Annotated[str | None, Field(strict=True, max_length=checks.MAX_TAG_TEXT)]
Payload = Annotated[Any, Field(description="the message; must match the protocol version's schema")]
Cursor = Annotated[
    str | None, Field(strict=True, max_length=200, description="next_cursor of the previous page")
]
PageLimit = Annotated[int, Field(strict=True, ge=1, le=checks.MAX_PAGE)]
TtlSeconds = Annotated[
    float | None,
    Field(
        strict=True,
        ge=1,
        le=checks.MAX_TTL_SECONDS,
        description=f"expire undelivered after this many seconds (max {checks.number(checks.MAX_TTL_SECONDS)}, 30 days)",
    ),
]
WaitSeconds = Annotated[
    float,
    Field(
        strict=True,
        ge=0,
        le=checks.MAX_WAIT_SECONDS,
        description="long-poll this long when nothing is waiting",
    ),
]
TimeoutSeconds = Annotated[
    float, Field(strict=True, ge=0, le=checks.MAX_WAIT_SECONDS, description="how long to wait now")
]
MaxMessages = Annotated[int, Field(strict=True, ge=1, le=checks.MAX_MESSAGES)]
LeaseSeconds = Annotated[
    float,
    Field(
        strict=True,
        ge=1,
        le=checks.MAX_LEASE_SECONDS,
        description="hidden from other receives this long; ack before it ends",
    ),
]
DelaySeconds = Annotated[
    float,
    Field(
        strict=True,
        ge=0,
        le=checks.MAX_DELAY_SECONDS,
        description="keep them hidden this long before redelivery",
    ),
]


class OutgoingMessage(BaseModel):
    """One message of a send_many: the arguments send takes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    to: SessionRef
    protocol: ProtocolName
    payload: Payload
    version: Version | None = None
    correlation_id: TagText = None
    reply_to: TagText = None
    priority: PriorityName = "normal"
    ttl_seconds: TtlSeconds = None
    idempotency_key: TagText = None


OutgoingMessages = Annotated[list[OutgoingMessage], Field(min_length=1, max_length=MAX_BATCH)]
