"""Benchmarks on Redis: a redis-server of the run's own (``--redis``) or one named by ``--store``.

Every section then spawns its brokers on that server, each section in a namespace of its own (its
name), and the redis-server's own CPU time is counted per section: on SQLite the store's work is
done inside the broker processes, on Redis part of it moves to the server, so a fair comparison
counts both.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import procfs


@dataclass
class RedisTarget:
    url: str
    pid: int | None  # the server's process when it runs on this machine, for its CPU time
    proc: subprocess.Popen[bytes] | None = None

    def cpu_seconds(self) -> float | None:
        if self.pid is None:
            return None
        try:
            return procfs.cpu_seconds(self.pid)
        except OSError:
            return None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


def start(folder: Path) -> RedisTarget:
    """A redis-server on a unix socket under ``folder``, AOF on with ``appendfsync everysec``."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("--redis needs redis-server on PATH (apt-get install redis-server)")
    folder.mkdir(parents=True, exist_ok=True)
    sock = folder / "redis.sock"
    args = [
        binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700", "--dir", str(folder),
        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
        "--logfile", str(folder / "redis.log"),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(1.0)
                s.connect(str(sock))
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"redis-server did not start; see {folder / 'redis.log'}")
        time.sleep(0.01)
    return RedisTarget(f"unix://{sock}", proc.pid, proc)


def attach(url: str) -> RedisTarget:
    """A server named by URL; its CPU is counted when it runs on this machine (INFO's process_id)."""
    from redis import Redis

    client = Redis.from_url(url)
    try:
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    comm = Path(f"/proc/{pid}/comm")
    local = comm.exists() and "redis" in comm.read_text()
    return RedisTarget(url, pid if local else None)
