"""Every refusal the broker can give, one class per stable error code.

A tool answer that fails starts with the code in capitals, then says what to do:
``UNKNOWN_PROTOCOL: no protocol 'chat' 1.4.0; registered versions: 1.0.0, 2.0.0``.
The codes are part of the public contract and listed in the README.
"""

from __future__ import annotations

import reprlib
from typing import Any, ClassVar

MAX_MESSAGE_CHARS = 1000  # what any refusal may say: its text is echoed to models and logs


def excerpt(value: Any, limit: int = 80) -> str:
    """A short, single-line ``repr`` of any value for an error text: never longer than ``limit``.

    Built from bounded pieces (reprlib), so a 1 MiB string or a list nested 100,000 deep costs no more
    than a small one; control, bidi and zero-width characters come out escaped, as ``repr`` writes them.
    """
    limit = max(limit, 8)
    shown = reprlib.Repr()
    shown.maxlevel = 3
    shown.maxstring = shown.maxother = shown.maxlong = limit
    shown.maxlist = shown.maxtuple = shown.maxdict = shown.maxset = 8
    try:
        text = shown.repr(value)
    except Exception:  # e.g. an int past Python's digit limit for str(), or a hostile __repr__
        text = f"<{type(value).__name__}>"
    text = text.replace("\r", "\\r").replace("\n", "\\n")  # repr of a str escapes these already
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bounded(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 1] + "…"


class BrokerError(Exception):
    """Base of all domain errors; ``code`` is the stable prefix a client can match on.

    The message is capped at ``MAX_MESSAGE_CHARS``: whatever a caller quotes into it, the answer stays small.
    """

    code: ClassVar[str] = "BROKER_ERROR"

    def __init__(self, message: str, **details: Any) -> None:
        message = _bounded(message)
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidArgument(BrokerError):
    """A parameter is malformed, out of range, or of the wrong type."""

    code = "INVALID_ARGUMENT"


class UnknownTool(BrokerError):
    """No tool with this name; tools/list shows the tools."""

    code = "UNKNOWN_TOOL"


class InvalidVersion(BrokerError):
    """A version is not MAJOR.MINOR.PATCH, or a version range cannot be parsed."""

    code = "INVALID_VERSION"


class InvalidSchema(BrokerError):
    """A protocol's JSON Schema does not pass its meta-schema, or names an unsupported draft."""

    code = "INVALID_SCHEMA"


class TooLarge(BrokerError):
    """A payload, schema or argument exceeds a configured size or nesting limit."""

    code = "TOO_LARGE"


class ProtocolConflict(BrokerError):
    """A different definition is already registered under this (name, version); bump the version."""

    code = "PROTOCOL_CONFLICT"


class UnknownProtocol(BrokerError):
    """No protocol with this name, or not at this version."""

    code = "UNKNOWN_PROTOCOL"


class CapabilityNotSupported(BrokerError):
    """The protocol does not declare the capability the call needs (e.g. ``broadcast``)."""

    code = "CAPABILITY_NOT_SUPPORTED"


class NotConnected(BrokerError):
    """This process has no session yet; call ``connect`` first."""

    code = "NOT_CONNECTED"


class AlreadyConnected(BrokerError):
    """This process is already bound to a session under another name; ``disconnect`` first."""

    code = "ALREADY_CONNECTED"


class NameTaken(BrokerError):
    """A live session held by another process already uses this name."""

    code = "NAME_TAKEN"


class UnknownSession(BrokerError):
    """No session with this name or id."""

    code = "UNKNOWN_SESSION"


class NotAccepted(BrokerError):
    """The recipient does not speak this protocol, or not at this version."""

    code = "NOT_ACCEPTED"


class NoCommonVersion(BrokerError):
    """No registered version of the protocol is accepted by both sides."""

    code = "NO_COMMON_VERSION"


class PayloadInvalid(BrokerError):
    """The payload does not match the protocol version's schema."""

    code = "PAYLOAD_INVALID"


class InboxFull(BrokerError):
    """The recipient already has the configured maximum of waiting messages."""

    code = "INBOX_FULL"


class UnknownMessage(BrokerError):
    """No message with this id in this session's inbox (or sent by this session)."""

    code = "UNKNOWN_MESSAGE"


class InvalidCursor(BrokerError):
    """A pagination cursor was not issued by this broker or is corrupt."""

    code = "INVALID_CURSOR"


class InvalidAdapter(BrokerError):
    """An adapter's steps do not fit the source schema's shape or the target schema."""

    code = "INVALID_ADAPTER"


class TransformFailed(BrokerError):
    """Adapting a payload to the recipient's version failed, or the result did not match its schema."""

    code = "TRANSFORM_FAILED"


class StoreBusy(BrokerError):
    """The database stayed locked by other writers past the retry budget; retry shortly."""

    code = "STORE_BUSY"


class Overloaded(BrokerError):
    """More writes than the store keeps up with: this one waited its turn and was refused early,
    nothing stored. Retry after ``retry_after_seconds``, which the text and the error's data carry."""

    code = "OVERLOADED"


class StoreUnavailable(BrokerError):
    """The database cannot be opened or written (read-only, corrupt, disk full)."""

    code = "STORE_UNAVAILABLE"


class LimitReached(BrokerError):
    """The store holds as many sessions, protocol versions or adapters as its settings allow
    (max_sessions, max_protocol_versions, max_adapters); nothing was stored."""

    code = "LIMIT_REACHED"


class RateLimited(BrokerError):
    """The sending session used up its rate (a token bucket); nothing was stored. Retry after
    ``retry_after_seconds``, which the text and the error's structured data both carry."""

    code = "RATE_LIMITED"


class TooManyStreams(BrokerError):
    """The session already holds the configured maximum of open streams; close or abort one."""

    code = "TOO_MANY_STREAMS"


class StreamNotOpen(BrokerError):
    """No open stream of this session has this id: unknown, closed, or aborted."""

    code = "STREAM_NOT_OPEN"


class StreamTooLong(BrokerError):
    """The stream already carries the configured maximum of chunks; close it and open another."""

    code = "STREAM_TOO_LONG"


def all_error_classes() -> list[type[BrokerError]]:
    """Every concrete error class, for the README check and the tool layer."""
    return [cls for cls in BrokerError.__subclasses__()]
