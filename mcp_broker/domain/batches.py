"""Many sends in one call, for agents that are programs: one tool call's overhead shared by up to
``MAX_BATCH`` messages, each still its own send (validated, routed, stored and answered alone)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import anyio.lowlevel

from .. import versions
from ..errors import BrokerError, InvalidArgument, Overloaded, RateLimited, StoreBusy, StoreUnavailable
from ..models import SendManyEntry, SendManyResult
from ..store.contract import Retryable, Snapshot, Unavailable
from .checks import check_ref
from .messaging import Messaging, send_query

MAX_BATCH = 100  # messages in one send_many
# A batch's read serves its sends this long at most: a long batch (writers queued for their turns)
# reads again, so the statuses it answers (delivered or queued) are as fresh as a lone send's, give or
# take this.
SNAPSHOT_SECONDS = 1.0

# After one of these, the items behind it would meet the same refusal (after the same wait, for a
# busy store): they are answered with it at once, not tried.
_STOPS_THE_REST = (RateLimited, Overloaded, StoreBusy, StoreUnavailable)


async def send_many(messaging: Messaging, items: Sequence[Mapping[str, Any]]) -> SendManyResult:
    """Send each item in order, as ``send`` would; one refused item does not stop the others, except
    a refusal the rest would meet too (rate limit, busy or unreachable store).

    Between one sender and one recipient the stored ones keep the items' order."""
    messaging.binding.require()
    if not 1 <= len(items) <= MAX_BATCH:
        raise InvalidArgument(f"give between 1 and {MAX_BATCH} messages")
    # One read for the whole batch: recipients, versions, adapters and agreements (a send whose
    # recipient reconnected meanwhile reads again, as send does).
    sends = [(str(i.get("to")), str(i.get("protocol"))) for i in items]
    snapshot, read_at = await _snapshot_for(messaging, sends), time.monotonic()
    entries: list[SendManyEntry] = []
    stopped: BrokerError | None = None
    for index, item in enumerate(items):
        if stopped is not None:
            entries.append(_refused(index, stopped, tried=False))
            continue
        # A send that finds the store free runs without giving the event loop a turn; between two
        # of them the loop serves what else arrived (a ping, another call), so a batch never holds it.
        await anyio.lowlevel.checkpoint()
        if snapshot is not None and time.monotonic() - read_at > SNAPSHOT_SECONDS:
            snapshot, read_at = await _snapshot_for(messaging, sends[index:]), time.monotonic()
        try:
            result = await messaging.send(**item, snapshot=snapshot)
        except BrokerError as exc:
            entries.append(_refused(index, exc, tried=True))
            if isinstance(exc, _STOPS_THE_REST):
                stopped = exc
        else:
            entries.append(SendManyEntry(index=index, ok=True, result=result))
    sent = sum(entry.ok for entry in entries)
    return SendManyResult(sent=sent, refused=len(entries) - sent, results=entries)


async def _snapshot_for(messaging: Messaging, sends: Sequence[tuple[str, str]]) -> Snapshot | None:
    """One snapshot for several sends ``(to, protocol)`` of the bound session, in one store call; None
    when the store cannot answer it whole (each send then reads its own, and answers for itself)."""
    valid: list[tuple[str, str]] = []
    for to, protocol in sends:
        try:
            check_ref(to)
            versions.check_protocol_name(protocol)
        except BrokerError:
            continue  # that send refuses itself
        valid.append((to, protocol))
    if not valid:
        return None
    query = send_query(messaging.binding.require(), valid)
    try:
        return await messaging.store.snapshot(query)
    except (Unavailable, Retryable):  # e.g. an outage whose mirror lacks one of the recipients
        return None


def _refused(index: int, exc: BrokerError, *, tried: bool) -> SendManyEntry:
    message = exc.message if tried else f"not tried: an earlier message was refused ({exc.message})"
    retry = exc.details.get("retry_after_seconds")
    return SendManyEntry(
        index=index,
        ok=False,
        code=exc.code,
        error=f"{exc.code}: {message}",
        retry_after_seconds=retry if isinstance(retry, int | float) else None,
    )
