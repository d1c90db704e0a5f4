"""Cross-process wake-ups: a Unix datagram socket per broker process.

A sender rings the recipient process's bell right after its transaction commits; the recipient's
long-poll wakes at once instead of polling the database. A lost ring costs only latency: receivers
also re-check the store on a slow timer (see ``Broker.receive``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import tempfile
from pathlib import Path

import anyio

from . import procs

log = logging.getLogger(__name__)


def bell_dir(db_path: Path) -> Path:
    """A private directory per database; short, because socket paths are limited to ~100 bytes."""
    digest = hashlib.sha1(str(db_path.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"mcp-broker-{os.getuid()}" / digest


class Doorbell:
    """This process's bell, and a ringer for everyone else's."""

    def __init__(self, db_path: Path, token: str) -> None:
        self.path: str | None = None
        self._db_path = db_path
        self._token = token
        self._sock: socket.socket | None = None
        self._out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._out.setblocking(False)
        self._changed = anyio.Event()

    def open(self) -> None:
        folder = bell_dir(self._db_path)
        try:
            folder.parent.mkdir(mode=0o700, exist_ok=True)
            folder.mkdir(mode=0o700, exist_ok=True)
            _sweep(folder)
            path = str(folder / f"{os.getpid()}-{self._token[:8]}.sock")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # left by a dead process that had our pid and token
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
            sock.setblocking(False)
        except OSError as exc:
            log.warning("no doorbell (%s); receivers will poll the store instead", exc)
            return
        self._sock, self.path = sock, path

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
                os.rmdir(os.path.dirname(self.path))  # only when it was the last bell here
        self._out.close()

    def ring(self, path: str | None) -> None:
        """Wake the process listening on ``path``; never blocks, never fails the caller."""
        if path is None:
            return
        if path == self.path:
            self.poke()
            return
        with contextlib.suppress(OSError):
            self._out.sendto(b"!", path)

    def poke(self) -> None:
        """Wake waiters in this process."""
        self._changed.set()
        self._changed = anyio.Event()

    def ticket(self) -> anyio.Event:
        """Take this before looking at the store, then wait on it: a ring in between is not missed."""
        return self._changed

    @staticmethod
    async def wait(ticket: anyio.Event, timeout: float) -> None:
        """Return when a bell rang since ``ticket`` was taken, or after ``timeout`` seconds."""
        with anyio.move_on_after(timeout):
            await ticket.wait()

    async def listen(self) -> None:
        """Turn incoming rings into in-process wake-ups; runs for the life of the broker."""
        if self._sock is None:
            return
        while True:
            await anyio.wait_readable(self._sock)
            with contextlib.suppress(BlockingIOError, InterruptedError):
                while self._sock.recv(64):
                    pass
            self.poke()


def _sweep(folder: Path) -> None:
    """Remove bells left by processes that were killed (their pid no longer runs)."""
    for entry in folder.glob("*.sock"):
        pid = entry.name.split("-", 1)[0]
        if pid.isdigit() and not procs.is_alive(int(pid), None):
            with contextlib.suppress(OSError):
                entry.unlink()
