"""A lean MCP client over stdio: spawns ``python -m mcp_broker`` as a host does and talks JSON-RPC to it.

The benchmark measures the broker, so the client must cost as little as possible: one line written per
request, one line read per answer, and a ``time.perf_counter()`` stamp taken when a request leaves and
when its answer arrives. It speaks protocol version 2025-11-25 (the one with ``ping``), does the
``initialize`` handshake like any host, and never validates results beyond JSON.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# What a host runs; a profiling session may prepend a profiler (e.g. ``py-spy record -o x --``).
BROKER_COMMAND = [sys.executable, "-m", "mcp_broker"]
PROTOCOL_VERSION = "2025-11-25"
CLIENT_INFO = {"name": "mcp-broker-bench", "version": "1"}
_dumps = json.JSONEncoder(separators=(",", ":")).encode


class ToolError(Exception):
    """A tool answered with ``isError``: a refusal, not a crash of the client."""


class BrokerGone(Exception):
    """The broker process exited or closed its stdout while a request waited for an answer."""


def broker_env(db: Path, **settings: Any) -> dict[str, str]:
    """The environment a host would give the broker: our own, minus any developer MCP_BROKER_* setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_BROKER_")}
    env["MCP_BROKER_DB"] = str(db)
    env["MCP_BROKER_LOG_LEVEL"] = "WARNING"  # errors still reach the log file; INFO would cost time
    # The benchmark's agents are programs measuring the broker, not models: no per-session rate limit.
    env["MCP_BROKER_RATE_PER_SECOND"] = env["MCP_BROKER_RATE_BURST"] = "1000000000"
    for key, value in settings.items():
        env["MCP_BROKER_" + key.upper()] = str(value)
    return env


class BrokerProcess:
    """One spawned broker process and the MCP connection to it."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path, spawned_at: float) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.log_path = log_path
        self.spawned_at = spawned_at
        self.initialized_at = 0.0
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[float, dict[str, Any]]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def spawn(
        cls,
        db: Path,
        log_dir: Path,
        name: str,
        *,
        init_timeout: float = 180.0,
        command: Sequence[str] = BROKER_COMMAND,
        **settings: Any,
    ) -> BrokerProcess:
        """Start a broker on ``db`` and finish the MCP handshake; stderr goes to ``log_dir/name.log``."""
        log_path = log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            spawned_at = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=broker_env(db, **settings),
                limit=64 * 1024 * 1024,  # a broadcast result lists every recipient
            )
        self = cls(proc, log_path, spawned_at)
        try:
            _, self.initialized_at = await asyncio.wait_for(
                self.request(
                    "initialize",
                    {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO},
                ),
                init_timeout,
            )
            self.notify("notifications/initialized")
        except BaseException:
            await self.close()
            raise
        return self

    # --- wire ------------------------------------------------------------------------------------

    async def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            while line := await stdout.readline():
                arrived = time.perf_counter()
                message = json.loads(line)
                if "method" in message:
                    self._answer_server(message)
                    continue
                future = self._pending.pop(message.get("id"), None)
                if future is not None and not future.done():
                    future.set_result((arrived, message))
        finally:
            gone = BrokerGone(f"broker pid {self.pid} closed its stdout; see {self.log_path}")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(gone)
            self._pending.clear()

    def _answer_server(self, message: dict[str, Any]) -> None:
        """Notifications need no answer; a request from the server gets an empty result or 'not found'."""
        if "id" not in message:
            return
        if message["method"] == "ping":
            self._write({"jsonrpc": "2.0", "id": message["id"], "result": {}})
        else:
            error = {"code": -32601, "message": "the benchmark client does not handle " + message["method"]}
            self._write({"jsonrpc": "2.0", "id": message["id"], "error": error})

    def _write(self, message: Mapping[str, Any]) -> float:
        stdin = self.proc.stdin
        assert stdin is not None
        data = _dumps(message).encode() + b"\n"
        leaving = time.perf_counter()
        stdin.write(data)  # the pipe is almost always writable: asyncio writes it at once
        return leaving

    def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._write(message)

    async def request(
        self, method: str, params: Mapping[str, Any] | None = None, *, sent: list[float] | None = None
    ) -> tuple[dict[str, Any], float]:
        """Send one request; return its result and the perf_counter stamp of the answer's arrival.

        ``sent``, if given, receives the stamp of the request leaving (before the answer arrives).
        """
        if self._reader.done():
            raise BrokerGone(f"broker pid {self.pid} is gone; see {self.log_path}")
        request_id = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        future: asyncio.Future[tuple[float, dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        leaving = self._write(message)
        if sent is not None:
            sent.append(leaving)
        arrived, answer = await future
        if "error" in answer:
            raise ToolError(f"{method}: JSON-RPC error {answer['error']}")
        return answer["result"], arrived

    async def ping(self) -> float:
        """One MCP ping round trip; returns the arrival stamp."""
        _, arrived = await self.request("ping")
        return arrived

    async def call(
        self, tool: str, arguments: Mapping[str, Any], *, sent: list[float] | None = None
    ) -> tuple[dict[str, Any], float]:
        """Call a tool; return its structured result and the arrival stamp. A tool error raises ToolError."""
        result, arrived = await self.request("tools/call", {"name": tool, "arguments": arguments}, sent=sent)
        if result.get("isError"):
            text = " ".join(c.get("text", "") for c in result.get("content", []))
            raise ToolError(f"{tool}: {text}")
        return result.get("structuredContent") or {}, arrived

    # --- the process -----------------------------------------------------------------------------

    async def close(self, timeout: float = 15.0) -> None:
        """Close stdin as a host does (a clean exit); terminate, then kill, only if it will not go."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
