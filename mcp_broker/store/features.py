"""The contract's message features: ordered streams, per-session rate buckets, and history.

Part of the store contract: ``contract.Store`` has the operations, this module their values and rules.

- **Streams.** A stream joins one sender to one recipient in one protocol version. Its chunks are
  messages of kind ``chunk`` numbered from 1 by the store as they are appended. A chunk is ready
  for a lease only when every earlier chunk of its stream is acked, so the recipient gets them in
  order, without gaps, one at a time; redelivery keeps that order. Appending to a stream that is
  not open, past ``max_chunks``, or to a full inbox stores nothing. Ending a stream marks it
  ``closed`` (its last chunk says so) or ``aborted`` with a reason; an abort dead-letters the
  chunks not yet leased and stores the notice (a message of kind ``stream_abort``), which is ready
  at once. A sender holds at most ``max_open`` open streams.
- **Rate buckets.** ``charge`` takes ``cost`` tokens from the session's bucket (refilled at
  ``rate`` per second up to ``burst``, starting full) or takes none and says when enough will be
  there. It is atomic, so processes sharing the session share its bucket. ``enqueue`` takes a
  ``RateCharge`` to charge in the same atomic step: nothing is stored and nothing taken when the
  bucket is short (``EnqueueOutcome.limited``), and nothing is taken when nothing is stored.
- **History.** A session's sent and received messages still stored (acked ones included), newest
  stored first, with every delivery of what it sent and its own delivery of what it received;
  store-issued cursors.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .contract import InboxRow, StatusRow


class StreamState(StrEnum):
    open = "open"
    closed = "closed"
    aborted = "aborted"


class AppendRefused(StrEnum):
    not_open = "not_open"  # unknown, not the caller's, closed or aborted
    too_many_chunks = "too_many_chunks"
    inbox_full = "inbox_full"


@dataclass(frozen=True)
class StreamRow:
    id: str
    sender_id: str
    recipient_id: str
    protocol: str
    version: str
    state: StreamState
    reason: str | None
    opened_at: float
    last_at: float  # the last append (or the opening)
    chunks: int  # appended so far
    received: int  # leased at least once
    acked: int


@dataclass(frozen=True)
class AppendOutcome:
    seq: int | None  # the chunk's number when stored
    refused: AppendRefused | None = None
    depth: int = 0  # the recipient's inbox depth, when it was full


@dataclass(frozen=True)
class RateCharge:
    """A charge made inside a write (``Store.enqueue``): ``cost`` tokens from ``session_id``'s bucket,
    by the same rule as ``charge``, taken only when the write stores something."""

    session_id: str
    cost: int
    rate: float
    burst: float


@dataclass(frozen=True)
class Charge:
    allowed: bool
    tokens: float  # left after the charge (or as they are, when refused)
    retry_after: float  # seconds until ``cost`` tokens are there; 0 when allowed


@dataclass(frozen=True)
class RateState:
    tokens: float  # as last charged (refill it to now with the bucket's rate)
    updated_at: float
    sent_recently: int  # messages stored by the session within the window asked for


@dataclass(frozen=True)
class HistoryQuery:
    peer_id: str | None = None  # the other side: sender of what was received, a recipient of what was sent
    protocol: str | None = None
    direction: str | None = None  # sent | received | None for both
    since: float | None = None
    until: float | None = None
    limit: int = 20
    cursor: str | None = None


@dataclass(frozen=True)
class HistoryEntry:
    direction: str  # sent | received
    message: InboxRow  # as the session sees it (a received one as delivered to it)
    deliveries: list[StatusRow]  # every recipient of what it sent; itself, for what it received


@dataclass(frozen=True)
class HistoryPage:
    entries: list[HistoryEntry]
    next_cursor: str | None
