"""A real ``redis-server`` that a test starts itself: a unix socket under the test's folder, AOF on.

Outside CI a missing ``redis-server`` (or redis-py) skips the Redis tier, saying why; under
``CI=true`` it fails the run, so CI cannot pass without testing Redis.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

START_TIMEOUT = 10.0


def require_redis() -> str:
    """The ``redis-server`` binary, or skip (fail under CI) with the reason."""
    binary = shutil.which("redis-server")
    missing = None
    if binary is None:
        missing = "redis-server is not installed (apt-get install redis-server)"
    else:
        try:
            import redis  # noqa: F401
        except ImportError:
            missing = "redis-py is not installed (pip install 'mcp-broker[redis]')"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Redis tier cannot run under CI: {missing}")
        pytest.skip(f"Redis tier skipped: {missing}")
    assert binary is not None
    return binary


class RedisServer:
    """One redis-server process on ``folder/redis.sock``; stop, kill and start it again at will."""

    def __init__(self, folder: Path, *, appendfsync: str = "everysec") -> None:
        self.binary = require_redis()
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.socket = folder / "redis.sock"
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, namespace: str | None = None) -> str:
        return f"unix://{self.socket}" + (f"?namespace={namespace}" if namespace else "")

    def start(self) -> None:
        args = [
            self.binary,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.folder),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.folder / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        self._wait_for_ping()

    def _wait_for_ping(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{log}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(1.0)
                    s.connect(str(self.socket))
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING in time")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync; what AOF already holds is all that survives."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
