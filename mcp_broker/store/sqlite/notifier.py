"""Wake-ups between the broker processes of one machine: a Unix datagram socket per bound session.

The socket's path is derived from the database, the namespace and the session id, so a sender needs nothing
from the store to ring: after its transaction commits it sends one byte to each recipient's path,
and the process holding that session wakes its long-polls at once. A lost ring costs only latency:
receivers also re-check the store on a slow timer.

People's tools that follow all traffic (``mcp-broker tail``, the dashboard) bind a watcher socket
in the ``watch`` folder beside the bells; every notify rings those too. The folder's listing is
cached by its modification time, so with no watcher a notify costs one ``stat``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

import anyio

from ...config import DEFAULT_NAMESPACE

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4096)
def _bell_name(session_id: str) -> str:
    """A session's socket name: derived, never stored; cached, since every send rings one."""
    return hashlib.sha1(session_id.encode()).hexdigest()[:16] + ".sock"


def bell_dir(db_path: Path, namespace: str = DEFAULT_NAMESPACE) -> Path:
    """A private directory per database and namespace (so neither bells nor the watchers' rings
    cross namespaces); short, because socket paths are limited to ~100 bytes."""
    digest = hashlib.sha1(f"{db_path.resolve()}\0{namespace}".encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"mcp-broker-{os.getuid()}" / digest


class BellNotifier:
    """The ``Notifier`` for stores on this machine: this process's bell and a ringer for the others'."""

    def __init__(self, db_path: Path, namespace: str = DEFAULT_NAMESPACE) -> None:
        self._folder = bell_dir(db_path, namespace)
        self._prefix = os.path.join(self._folder, "")  # as text: joining Paths costs more than a ring
        self._sock: socket.socket | None = None
        self._path: str | None = None
        self._out: socket.socket | None = None  # rings the others' bells
        self._rung = 0  # rings sent from ``_out``
        self._changed = anyio.Event()
        self._rebound = anyio.Event()
        self._ready = False
        self._watch_dir = self._folder / "watch"
        self._watcher: socket.socket | None = None
        self._watcher_path: str | None = None
        self._watchers: tuple[float, list[str]] = (-1.0, [])  # (folder mtime, socket paths)

    def _bell(self, session_id: str) -> str:
        return self._prefix + _bell_name(session_id)

    async def open(self) -> None:
        self._out = _ringer()
        try:
            self._folder.parent.mkdir(mode=0o700, exist_ok=True)
            self._folder.mkdir(mode=0o700, exist_ok=True)
            self._ready = True
        except OSError as exc:
            log.warning("no doorbell folder (%s); receivers will poll the store instead", exc)
        if self._ready:
            _sweep(self._folder)

    async def close(self) -> None:
        await self.bind(None)
        if self._watcher is not None:
            anyio.notify_closing(self._watcher)
            self._watcher.close()
            self._watcher = None
        if self._watcher_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._watcher_path)
                self._watch_dir.rmdir()  # only when it was the last watcher
        if self._out is not None:
            self._out.close()
            self._out = None
        with contextlib.suppress(OSError):
            self._folder.rmdir()  # only when no bell is left in it

    async def bind(self, session_id: str | None) -> None:
        if self._sock is not None:
            anyio.notify_closing(self._sock)  # wakes ``listen`` off the old socket
            self._sock.close()
            self._sock = None
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path)
            self._path = None
        if session_id is not None and self._ready:
            path = self._bell(session_id)
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # left by the session's previous process, which is gone
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.bind(path)
                sock.setblocking(False)
            except OSError as exc:
                log.warning("no doorbell (%s); receivers will poll the store instead", exc)
            else:
                self._sock, self._path = sock, path
        self._rebound.set()
        self._rebound = anyio.Event()

    def notify(self, session_ids: Sequence[str]) -> None:
        for session_id in session_ids:
            path = self._bell(session_id)
            if path == self._path:
                self.poke()
            else:
                self._ring(path)
        for path in self._watcher_paths():
            if path == self._watcher_path:
                self.poke()
            else:
                self._ring(path)

    def _ring(self, path: str) -> None:
        """One byte to the socket at ``path``; never blocks, never fails the caller.

        A datagram counts against its sender's buffer until the receiver reads it, so ringing a few
        hundred sessions at once (a broadcast) fills one socket's (some 280 rings on Linux's default
        208 KiB), and every ring after that would be lost. So ring on from a fresh socket: what the old
        one sent is still delivered. A fresh socket refused too means the receiver's own queue is
        full of rings it has not read yet, which wake it anyway.
        """
        if self._out is None:
            return
        try:
            self._out.sendto(b"!", path)
            self._rung += 1
        except BlockingIOError:
            if not self._rung:
                return
            try:
                fresh = _ringer()
            except OSError:  # out of descriptors: this ring is lost, and the receiver's timer covers it
                return
            self._out.close()
            self._out, self._rung = fresh, 0
            self._ring(path)
        except OSError:  # nobody is bound there (any more): a session no process holds
            pass

    def _watcher_paths(self) -> list[str]:
        try:
            mtime = os.stat(self._watch_dir).st_mtime
        except OSError:
            return []
        if mtime != self._watchers[0]:
            try:
                self._watchers = (mtime, [entry.path for entry in os.scandir(self._watch_dir)])
            except OSError:
                return []
        return self._watchers[1]

    async def watch(self) -> None:
        if self._watcher is not None or not self._ready:
            return
        try:
            self._watch_dir.mkdir(mode=0o700, exist_ok=True)
            _sweep(self._watch_dir)
            path = str(self._watch_dir / f"{os.getpid()}-{id(self):x}.sock")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
            sock.setblocking(False)
        except OSError as exc:
            log.warning("cannot watch traffic (%s); following it by polling the store", exc)
            return
        self._watcher, self._watcher_path = sock, path
        self._rebound.set()  # listen picks the watcher up
        self._rebound = anyio.Event()

    def poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def ticket(self) -> anyio.Event:
        return self._changed

    async def listen(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._listen_watcher)
            while True:
                sock, rebound = self._sock, self._rebound
                if sock is not None:
                    await self._drain(sock)  # until a new binding closes it
                await rebound.wait()

    async def _listen_watcher(self) -> None:
        while self._watcher is None:
            await self._rebound.wait()
        await self._drain(self._watcher)

    async def _drain(self, sock: socket.socket) -> None:
        """Turn each datagram on ``sock`` into a local wake-up, until the socket is closed."""
        with contextlib.suppress(OSError, anyio.ClosedResourceError):
            while True:
                await anyio.wait_readable(sock)
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    while sock.recv(64):
                        pass
                self.poke()


def _ringer() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


def _sweep(folder: Path) -> None:
    """Remove bells left by processes that were killed: no socket is bound behind them any more."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        for entry in folder.glob("*.sock"):
            try:
                probe.connect(str(entry))
            except ConnectionRefusedError:
                with contextlib.suppress(OSError):
                    entry.unlink()
            except OSError:
                pass
    finally:
        probe.close()
