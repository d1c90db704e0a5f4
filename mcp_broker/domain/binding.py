"""The session this broker process acts as: one owner, one writer.

Every part reads the binding; only ``Binding`` changes it, and it keeps the notifier listening for
the bound session. A model cannot act as another session by passing an id: the binding lives in
the process, not in any argument.
"""

from __future__ import annotations

from ..errors import NotConnected
from ..store.contract import Notifier


class Binding:
    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier
        self._id: str | None = None
        self._name: str | None = None

    @property
    def session_id(self) -> str | None:
        return self._id

    @property
    def name(self) -> str | None:
        return self._name

    def require(self) -> str:
        """The bound session's id, or NOT_CONNECTED."""
        if self._id is None:
            raise NotConnected("this process has no session; call connect(name, protocols) first")
        return self._id

    def holds(self, session_id: str) -> bool:
        """Whether this process still acts as ``session_id`` (an in-flight call re-checks this)."""
        return self._id == session_id

    async def bind(self, session_id: str, name: str) -> None:
        if session_id != self._id:
            await self._notifier.bind(session_id)
        self._id, self._name = session_id, name

    async def unbind(self) -> None:
        if self._id is not None:
            self._id = self._name = None
            await self._notifier.bind(None)
            self._notifier.poke()  # in-flight waits re-check and see they no longer act for it
