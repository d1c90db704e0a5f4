"""Tests for mcp_broker.transport: every stdio request gets an answer, and stdout carries only JSON-RPC."""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import broker_env

from mcp_broker.mcp.transport import scan_envelope

pytestmark = pytest.mark.timeout(60)

MAX_LINE = 1024 * 1024
DEEP = 5000
TIMEOUT = 15.0

SERVER_SCRIPT = f"""
import os
import sys
from contextlib import asynccontextmanager
from functools import partial

import anyio
from fastmcp import FastMCP

from mcp_broker.mcp.transport import serve_stdio


@asynccontextmanager
async def lifespan(server):
    print("LIFESPAN-UP")  # startup chatter must not reach the wire either
    try:
        yield {{}}
    finally:
        sys.stderr.write("LIFESPAN-DOWN\\n")
        sys.stderr.flush()


mcp = FastMCP("transport-test", lifespan=lifespan)


@mcp.tool
def echo(x: dict) -> dict:
    return x


@mcp.tool
def shout() -> str:
    print("oops")
    print("oops-flushed", flush=True)
    os.write(1, b"oops-raw-fd\\n")
    return "done"


anyio.run(partial(serve_stdio, mcp, max_line_bytes={MAX_LINE}))
"""


class Server:
    """A spawned server speaking raw JSON-RPC lines; every read has a timeout."""

    def __init__(self, script: Path | None, env: dict[str, str] | None = None) -> None:
        # Show leaked-resource warnings, so the EOF test can assert there are none.
        args = [str(script)] if script is not None else ["-m", "mcp_broker"]
        self.proc = subprocess.Popen(
            [sys.executable, "-W", "always::ResourceWarning", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stdout_lines: list[bytes] = []
        self.stderr_chunks: list[bytes] = []
        self._threads = [
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._next_id = 100

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout_lines.append(line)
            try:
                self.messages.put(json.loads(line))
            except ValueError:
                self.messages.put({"__not_json__": line.decode(errors="replace")})

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for chunk in iter(lambda: self.proc.stderr.read1(65536), b""):  # type: ignore[union-attr]
            self.stderr_chunks.append(chunk)

    @property
    def stderr(self) -> str:
        return b"".join(self.stderr_chunks).decode(errors="replace")

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data if data.endswith(b"\n") else data + b"\n")
        self.proc.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(json.dumps(message).encode())

    def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        try:
            message = self.messages.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no response within {timeout}s; stderr:\n{self.stderr[-4000:]}")
        assert "__not_json__" not in message, f"non-JSON on stdout: {message}"
        return message

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._next_id += 1
        self.send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params or {}})
        response = self.recv()
        assert response.get("id") == self._next_id, response
        return response

    def initialize(self) -> None:
        response = self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "0"},
            },
        )
        assert "result" in response, response
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def close(self, timeout: float = TIMEOUT) -> int:
        """Close stdin (EOF), wait for exit, and drain both pipes; returns the exit code."""
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            for thread in self._threads:
                thread.join(timeout=5)
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()
        return code


@pytest.fixture
def server(tmp_path: Path):
    script = tmp_path / "server.py"
    script.write_text(SERVER_SCRIPT)
    srv = Server(script)
    try:
        srv.initialize()
        yield srv
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            srv.close()  # idempotent; kills the process if it will not exit


def _call(name: str, arguments: dict[str, Any], request_id: int | str) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def _deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _assert_error(response: dict[str, Any], request_id: Any, code: int) -> None:
    assert response["jsonrpc"] == "2.0"
    assert response["id"] == request_id, response
    assert response["error"]["code"] == code, response


def test_normal_call(server: Server) -> None:
    response = server.request("tools/call", {"name": "echo", "arguments": {"x": {"k": [1, 2]}}})
    assert response["result"]["structuredContent"] == {"k": [1, 2]}, response


def test_bad_lines_get_errors_and_server_keeps_serving(server: Server) -> None:
    # (2) nested past pydantic-core's recursion limit: parse error, but the id is recovered.
    head = '{"jsonrpc":"2.0","id":"deep-1","method":"tools/call","params":{"name":"echo","arguments":{"x":'
    server.send_raw((head + _deep(DEEP) + "}}}").encode())
    _assert_error(server.recv(), "deep-1", -32700)

    # id after the deep part, as an integer.
    tail = '{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo","arguments":{"x":'
    server.send_raw((tail + _deep(DEEP) + '}},"id":42}').encode())
    _assert_error(server.recv(), 42, -32700)

    # (3) not JSON at all.
    server.send_raw(b"not json")
    _assert_error(server.recv(), None, -32700)

    # (4) JSON, but not JSON-RPC.
    server.send_raw(b'{"id": 7, "foo": 1}')
    _assert_error(server.recv(), 7, -32600)

    # Too large: answered, the rest of the line discarded, memory bounded.
    server.send_raw(
        b'{"jsonrpc":"2.0","id":"big","method":"ping","params":{"p":"' + b"x" * (2 * MAX_LINE) + b'"}}'
    )
    _assert_error(server.recv(), "big", -32600)

    # An unparseable notification gets no answer (JSON-RPC forbids it); blank lines are skipped.
    server.send_raw(('{"jsonrpc":"2.0","method":"notifications/x","params":' + _deep(DEEP) + "}").encode())
    server.send_raw(b"   ")

    # (5) still serving, and the next frame on the wire is this answer.
    response = server.request("tools/call", {"name": "echo", "arguments": {"x": {"after": True}}})
    assert response["result"]["structuredContent"] == {"after": True}, response
    assert server.messages.empty()


def test_stray_output_goes_to_stderr(server: Server) -> None:
    response = server.request("tools/call", {"name": "shout", "arguments": {}})
    assert response["result"]["content"][0]["text"] == "done", response
    server.request("ping")
    assert server.close() == 0
    for line in server.stdout_lines:
        assert json.loads(line)["jsonrpc"] == "2.0", line
    stderr = server.stderr
    for marker in ("LIFESPAN-UP", "oops\n", "oops-flushed", "oops-raw-fd"):
        assert marker in stderr, (marker, stderr)
    assert not any(b"oops" in line or b"LIFESPAN" in line for line in server.stdout_lines)


def test_eof_exits_cleanly_and_runs_lifespan_teardown(server: Server) -> None:
    started = time.monotonic()
    assert server.close(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert "LIFESPAN-DOWN" in server.stderr
    assert "Warning" not in server.stderr, server.stderr


def test_client_gone_from_stdout_ends_server_cleanly(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(SERVER_SCRIPT)
    err_path = tmp_path / "stderr.txt"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
        )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdout.close()  # nobody will read our answers any more
        proc.stdin.write(b"not json\n")  # forces a write to the dead pipe
        proc.stdin.flush()
        code = proc.wait(timeout=TIMEOUT)  # stdin stays open: the exit must come from EPIPE
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
    stderr = err_path.read_text(errors="replace")
    assert code == 0, stderr
    assert "LIFESPAN-DOWN" in stderr


@pytest.fixture
def broker(tmp_path: Path):
    """A real ``python -m mcp_broker`` process, initialized, spoken to in raw JSON-RPC lines."""
    srv = Server(None, env=broker_env(tmp_path / "broker.db"))
    try:
        srv.initialize()
        yield srv
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            srv.close()


ODD_IDS = ["1.5", "7.0", "1e3", "-0.0", "true", "false", '{"a":1}', "[1]", "[]", "null"]


@pytest.mark.e2e
def test_a_request_with_an_id_neither_string_nor_integer_gets_exactly_one_invalid_request(
    broker: Server,
) -> None:
    for raw_id in ODD_IDS:
        # connect would bind a session if it ran: it must not, since its answer could not be addressed.
        broker.send_raw(
            b'{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"connect",'
            b'"arguments":{"name":"ghost","protocols":[]}}}' % raw_id.encode()
        )
        _assert_error(broker.recv(), None, -32600)
        broker.send_raw(b'{"jsonrpc":"2.0","id":%s,"method":"ping"}' % raw_id.encode())
        _assert_error(broker.recv(), None, -32600)
    broker.send_raw(b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]')  # a batch: MCP has none since 2025-06
    _assert_error(broker.recv(), None, -32600)
    broker.send({"jsonrpc": "2.0", "method": "notifications/initialized"})  # no id: no answer
    response = broker.request("tools/call", {"name": "list_sessions", "arguments": {}})
    assert response["result"]["isError"], response  # no session: the odd-id connect never ran
    assert response["result"]["content"][0]["text"].startswith("NOT_CONNECTED"), response
    assert broker.request("ping")["result"] == {}
    assert broker.messages.empty()  # exactly one answer each: nothing else arrived
    assert broker.close() == 0
    assert "Traceback" not in broker.stderr, broker.stderr[-4000:]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"not json", (None, set(), False)),
        (b'{"id": 7, "foo": 1}', (7, {"id", "foo"}, True)),
        (b'{"id": -3}', (-3, {"id"}, True)),
        (b'{"id": "a\\"b"}', ('a"b', {"id"}, True)),
        (b'{"id": 1.5}', (None, {"id"}, True)),
        (b'{"id": true}', (None, {"id"}, True)),
        (b'{"id": null, "method": "m"}', (None, {"id", "method"}, True)),
        (b'{"a": {"id": 1, "s": "}{]["}, "id": 2}', (2, {"a", "id"}, True)),
        (b'{"method": "m", "params": [[[', (None, {"method"}, False)),
        (b'{"id": 9, "params": [[[', (9, {"id"}, False)),
        (b'[{"id": 1}]', (None, set(), False)),
    ],
)
def test_scan_envelope(data: bytes, expected: tuple[Any, set[str], bool]) -> None:
    assert scan_envelope(data) == expected


def test_scan_envelope_deep_is_iterative() -> None:
    depth = 200_000  # far past any recursion limit
    data = b'{"params":' + b"[" * depth + b"]" * depth + b', "id": "x"}'
    assert scan_envelope(data) == ("x", {"params", "id"}, True)


@pytest.mark.e2e
def test_a_request_on_the_last_line_without_a_newline_is_answered_before_exit(broker: Server) -> None:
    assert broker.proc.stdin is not None
    broker.proc.stdin.write(b'{"jsonrpc":"2.0","id":"last","method":"ping"}')  # no newline, then EOF
    broker.proc.stdin.flush()
    broker.proc.stdin.close()
    _assert_error_free(broker.recv(), "last")
    assert broker.close() == 0


def _assert_error_free(response: dict[str, Any], request_id: Any) -> None:
    assert response["id"] == request_id and "result" in response, response
