"""Per-session rate limits: a token bucket in the store, charged in the write that stores the message."""

from __future__ import annotations

from collections.abc import Callable

from ..config import Settings
from ..errors import RateLimited
from ..models import RateInfo
from ..store.contract import Store
from ..store.features import Charge, RateCharge

WINDOW_SECONDS = 60.0  # what "current rate" counts


class RateLimiter:
    """Charges sends, broadcasts (per recipient), requests, replies and stream chunks."""

    def __init__(self, store: Store, settings: Settings, clock: Callable[[], float]) -> None:
        self.store = store
        self.rate = settings.rate_per_second
        self.burst = settings.rate_burst
        self.clock = clock

    def toll(self, session_id: str, cost: int = 1) -> RateCharge | None:
        """The charge for a write to make with its store (``Store.enqueue(rate=...)``), or None when it
        costs nothing; a call that can never fit the bucket is refused here, before anything is read."""
        if cost <= 0:
            return None
        if cost > self.burst:
            raise RateLimited(
                f"this call would send {cost} messages at once; the limit is {self.burst:g} (rate_burst). "
                "Send to fewer recipients at a time.",
                retry_after_seconds=None,
            )
        return RateCharge(session_id, cost, self.rate, self.burst)

    def refuse(self, refused: Charge | None) -> None:
        """Raise RATE_LIMITED for a charge the store refused (``EnqueueOutcome.limited``), if any."""
        if refused is not None:
            raise self.refusal(refused)

    def refusal(self, charge: Charge) -> RateLimited:
        """RATE_LIMITED for a refused charge, saying when to retry (nothing was taken or stored)."""
        wait = round(charge.retry_after + 0.0005, 3)
        return RateLimited(
            f"you are sending faster than {self.rate:g} messages per second (bursts up to {self.burst:g}); "
            f"nothing was stored. Retry in {wait:g} s (retry_after_seconds).",
            retry_after_seconds=wait,
        )

    async def charge(self, session_id: str, cost: int = 1) -> None:
        """Take ``cost`` tokens now, or refuse with RATE_LIMITED (for writes that cannot carry a toll)."""
        toll = self.toll(session_id, cost)
        if toll is None:
            return
        charged = await self.store.charge(
            session_id, cost, rate=toll.rate, burst=toll.burst, now=self.clock()
        )
        if not charged.allowed:
            raise self.refusal(charged)

    async def infos(self) -> dict[str, RateInfo]:
        """Every session's recent rate and whether it is limited now, for list_sessions."""
        now = self.clock()
        states = await self.store.rate_states(since=now - WINDOW_SECONDS)
        infos = {}
        for session_id, state in states.items():
            tokens = min(
                self.burst, state.tokens + max(0.0, now - state.updated_at) * self.rate
            )  # refilled to now
            infos[session_id] = RateInfo(
                sent_last_minute=state.sent_recently, tokens=round(tokens, 3), limited=tokens < 1
            )
        return infos
