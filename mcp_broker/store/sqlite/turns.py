"""Writers take turns: a lock file every broker process on this machine flocks around a write.

SQLite's own lock has no queue: a writer that finds it held can only sleep and try again, so under
load the retries spin, a writer whose backoff grew keeps losing to fresh ones, and one can wait out
the whole busy budget. ``flock`` sleeps in the kernel until the holder lets go, so a crowd of
writers costs no CPU while it waits and each gets the lock soon after the one before it. SQLite still
guards every transaction; the turn only orders who asks it next (a writer that takes no turn, like an
old process or a person's tool, is retried around as before).

The waiting happens on a helper thread, so a turn can be given up after a deadline (a holder that
was stopped with SIGSTOP keeps its lock): the caller is told early instead of stalling without end.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import threading
from pathlib import Path


def turns_path(db_path: Path) -> Path:
    """Beside the doorbells, not the database: nothing appears in the database's folder."""
    digest = hashlib.sha1(str(db_path.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"mcp-broker-{os.getuid()}" / f"{digest}.writers"


class Turns:
    """One process's place in the machine-wide queue of writers to one database."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        # Two descriptions: a quick try from the event loop's thread and the helper's wait conflict
        # with each other as with another process's, so neither can take the other's turn.
        self._quick = os.open(path, flags, 0o600)
        self._queued = os.open(path, flags, 0o600)
        self._wanted = threading.Semaphore(0)
        self._state = threading.Lock()
        self._granted = threading.Event()
        self._abandoned = 0  # waits given up on before the helper got them: it lets go at once
        self._closed = False
        self._helper: threading.Thread | None = None

    def try_take(self) -> bool:
        """Take a turn now if nobody holds one (from the event loop's thread)."""
        try:
            fcntl.flock(self._quick, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def give_quick(self) -> None:
        fcntl.flock(self._quick, fcntl.LOCK_UN)

    def take(self, timeout: float) -> bool:
        """Wait in line for a turn, at most ``timeout`` seconds (from the store's worker thread)."""
        try:
            fcntl.flock(self._queued, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        if self._helper is None:
            self._helper = threading.Thread(target=self._wait_in_line, name="mcp-broker-turns", daemon=True)
            self._helper.start()
        self._granted.clear()
        self._wanted.release()
        if self._granted.wait(timeout):
            return True
        with self._state:
            if self._granted.is_set():
                return True
            self._abandoned += 1
        return False

    def give(self) -> None:
        fcntl.flock(self._queued, fcntl.LOCK_UN)

    def _wait_in_line(self) -> None:
        while True:
            self._wanted.acquire()
            if self._closed:
                return
            fcntl.flock(self._queued, fcntl.LOCK_EX)  # sleeps in the kernel
            with self._state:
                if self._abandoned:
                    self._abandoned -= 1
                    fcntl.flock(self._queued, fcntl.LOCK_UN)
                    continue
                self._granted.set()

    def close(self) -> None:
        self._closed = True
        self._wanted.release()
        if self._helper is not None:
            self._helper.join(0.1)  # at once unless it is blocked in flock
        if self._helper is None or not self._helper.is_alive():
            for fd in (self._quick, self._queued):
                with contextlib.suppress(OSError):
                    os.close(fd)
        # else: a helper blocked in flock keeps its descriptor; the process's exit releases both
