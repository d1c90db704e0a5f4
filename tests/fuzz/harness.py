"""The fuzz tier's harness: real broker processes spoken to in raw JSON-RPC lines, and what every case checks.

A case sends one or more frames and waits for its answers while pinging the same pipe: over stdio there is
no second connection, so a ping sent while the case runs, and answered late, is how a stalled event loop
shows. Every answer is checked for a documented code and for internals; stdout for anything but JSON-RPC;
the process for its memory.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import broker_env

README = Path(__file__).resolve().parents[2] / "README.md"
START_SECONDS = 120.0  # a process started and answering initialize
ANSWER_SECONDS = 20.0  # a case's deadline: the fuzzer never asks for long-polls longer than a second
# A ping slower than PING_MS while a case runs is reported (counted per category); one slower than
# PING_FAIL_MS is a problem. The default suite runs on shared two-core machines, where a loaded scheduler
# alone can delay an idle process by a few hundred ms; a quiet machine can set both to 100.
PING_MS = float(os.environ.get("MCP_BROKER_FUZZ_PING_MS", "100"))
PING_FAIL_MS = float(os.environ.get("MCP_BROKER_FUZZ_PING_FAIL_MS", "750"))
MEMORY_CEILING_KB = 600 * 1024
# What must never reach a client: tracebacks, source paths, module names of the broker or its libraries.
INTERNALS = re.compile(
    r"Traceback|File \"|\.py\b|site-packages|mcp_broker\.|pydantic_core|jsonschema\.|aiosqlite|sqlite3\."
)

# Cases that fail until the lead's fixes land, each with the defect of issue 9 it waits for. The one
# place to edit: remove an entry once its fix is merged (the marks are strict, so a fixed case says so).
NEEDS_LEAD: dict[str, str] = {}  # case id -> the fix it waits for (strict xfail); none wait now


def lead(case_id: str) -> Any:
    """``case_id`` as a pytest param, strictly xfail-marked while it waits in ``NEEDS_LEAD``."""
    if case_id in NEEDS_LEAD:
        return pytest.param(
            case_id, id=case_id, marks=pytest.mark.xfail(strict=True, reason=NEEDS_LEAD[case_id])
        )
    return pytest.param(case_id, id=case_id)


def documented_codes() -> set[str]:
    """The codes of the README's Errors table."""
    section = README.read_text().split("## Errors", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.MULTILINE))


CODES = documented_codes()


class RawBroker:
    """A ``python -m mcp_broker`` process, its stdin written and its stdout read as raw lines."""

    def __init__(self, db: Path, **settings: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mcp_broker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=broker_env(db, **settings),
        )
        self.answers: dict[Any, queue.Queue[dict[str, Any]]] = {}
        self.unaddressed: queue.Queue[dict[str, Any]] = queue.Queue()  # answers whose id we did not send
        self.impure: list[bytes] = []  # stdout lines that are not JSON-RPC
        self.stderr_chunks: list[bytes] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=t, daemon=True) for t in (self._pump_stdout, self._pump_stderr)
        ]
        for thread in self._threads:
            thread.start()

    # --- the pipes ---------------------------------------------------------------------------------

    def _box(self, request_id: Any) -> queue.Queue[dict[str, Any]]:
        with self._lock:
            return self.answers.setdefault(json.dumps(request_id), queue.Queue())

    def _drop(self, request_id: Any) -> None:
        """Forget an answered id: a second answer to it then arrives as unaddressed, a problem still.
        (Kept, the boxes of thousands of pings made this process's own garbage collections slow
        enough to show as slow pings.)"""
        with self._lock:
            self.answers.pop(json.dumps(request_id), None)

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                self.impure.append(line)
                continue
            if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
                self.impure.append(line)
            elif "id" in message and ("result" in message or "error" in message):
                key = json.dumps(message["id"])
                with self._lock:
                    box = self.answers.get(key)
                (box if box is not None else self.unaddressed).put(message)
            # requests and notifications from the server (logging, pings) are allowed and ignored

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for chunk in iter(lambda: self.proc.stderr.read1(65536), b""):  # type: ignore[union-attr]
            self.stderr_chunks.append(chunk)

    @property
    def stderr(self) -> str:
        return b"".join(self.stderr_chunks).decode(errors="replace")

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def next_id(self) -> str:
        return f"fz-{next(self._ids)}"

    # --- requests ----------------------------------------------------------------------------------

    def send(self, method: str, params: dict[str, Any] | None = None, request_id: Any = None) -> Any:
        """Send a request without waiting; returns its id."""
        request_id = self.next_id() if request_id is None else request_id
        self._box(request_id)
        frame = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}
        self.write(json.dumps(frame).encode() + b"\n")
        return request_id

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        self.write(json.dumps({"jsonrpc": "2.0", "method": method, "params": params or {}}).encode() + b"\n")

    def wait(self, request_id: Any, timeout: float = ANSWER_SECONDS) -> dict[str, Any] | None:
        """The answer to ``request_id``, or ``None`` if none came within ``timeout``."""
        try:
            answer = self._box(request_id).get(timeout=timeout)
        except queue.Empty:
            return None
        self._drop(request_id)
        return answer

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = self.wait(self.send(method, params))
        assert answer is not None, f"no answer to {method}; stderr:\n{self.stderr[-3000:]}"
        return answer

    def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """A tool's result (``isError`` included), asserting the call was answered."""
        answer = self.request("tools/call", {"name": tool, "arguments": arguments})
        assert "result" in answer, answer
        result: dict[str, Any] = answer["result"]
        return result

    def ok(self, tool: str, **arguments: Any) -> dict[str, Any]:
        result = self.call(tool, **arguments)
        assert not result.get("isError"), result
        structured: dict[str, Any] = result.get("structuredContent") or {}
        return structured

    def initialize(self) -> None:
        params = {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "fuzz", "version": "0"},
        }
        # A process's first answer waits for Python to start and import FastMCP: on a loaded machine
        # that alone can pass a case's deadline, and it is not what the cases measure.
        answer = self.wait(self.send("initialize", params), timeout=START_SECONDS)
        assert answer is not None, f"no answer to initialize; stderr:\n{self.stderr[-3000:]}"
        assert "result" in answer
        self.notify("notifications/initialized")

    def rss_kb(self) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/status") as status:
                return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            return 0

    def close(self, timeout: float = 15.0) -> int | None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            for thread in self._threads:
                thread.join(timeout=5)
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()


# --- cases and what they must show -------------------------------------------------------------


@dataclass
class Outcome:
    """What one case gave: ``refused`` with a code, ``accepted``, and any ``problems`` (check: detail)."""

    category: str
    case: str
    answers: list[dict[str, Any]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    slow_pings_ms: list[float] = field(default_factory=list)
    max_ping_ms: float = 0.0

    @property
    def refused(self) -> bool:
        return any(_refusal_text(answer) is not None or "error" in answer for answer in self.answers)

    def problem(self, check: str, detail: str) -> None:
        self.problems.append((check, f"{self.case}: {detail}"[:600]))


def _refusal_text(answer: dict[str, Any]) -> str | None:
    result = answer.get("result")
    if isinstance(result, dict) and result.get("isError"):
        content = result.get("content") or [{}]
        return str(content[0].get("text", ""))
    return None


def check_answer(outcome: Outcome, answer: dict[str, Any]) -> None:
    """A refusal starts with a documented code; no answer carries internals."""
    text = _refusal_text(answer)
    if text is not None:
        code = text.split(":", 1)[0]
        if code not in CODES:
            outcome.problem("codes", f"refusal without a documented code: {text[:200]!r}")
    if "error" in answer:
        text = str(answer["error"].get("message", ""))
    if text is not None and INTERNALS.search(text):
        outcome.problem("internals", f"internals in an answer: {text[:300]!r}")


def run_case(
    broker: RawBroker,
    category: str,
    case: str,
    frames: list[bytes],
    expect: list[Any],
    timeout: float = ANSWER_SECONDS,
    ping_ms: float = PING_FAIL_MS,
) -> Outcome:
    """Write ``frames``, then wait for exactly the answers ``expect`` lists (ids; ``None`` for an answer
    with id null) while pinging; check each answer, the pings, stdout, liveness and memory."""
    outcome = Outcome(category, case)
    wanted = Counter(json.dumps(request_id) for request_id in expect)
    for request_id in expect:
        broker._box(request_id)
    for frame in frames:
        broker.write(frame)
    deadline = time.monotonic() + timeout
    while +wanted and time.monotonic() < deadline:
        ping = broker.send("ping")
        sent = time.monotonic()
        answer = broker.wait(ping, timeout=max(0.0, deadline - sent))
        latency = (time.monotonic() - sent) * 1000
        if answer is None:
            outcome.problem("alive", "ping unanswered: the process stalled or died")
            break
        outcome.max_ping_ms = max(outcome.max_ping_ms, latency)
        if latency > PING_MS:
            outcome.slow_pings_ms.append(latency)
        for key in list(+wanted):
            box = broker._box(json.loads(key))
            with contextlib.suppress(queue.Empty):
                while wanted[key] > 0:
                    outcome.answers.append(box.get(timeout=0.02))
                    wanted[key] -= 1
    for key, missing in (+wanted).items():
        outcome.problem("answers", f"{missing} answer(s) to id {key} missing after {timeout:.0f}s")
    sentinel = broker.send("ping")  # answered after anything still due to this case
    if broker.wait(sentinel) is None:
        outcome.problem("alive", "the closing ping was not answered")
    for key in set(wanted):
        if not broker._box(json.loads(key)).empty():
            outcome.problem("answers", f"more than one answer to id {key}")
            broker._box(json.loads(key)).get()
        broker._drop(json.loads(key))
    while not broker.unaddressed.empty():
        outcome.problem("answers", f"an unexpected answer: {broker.unaddressed.get()!r:.200}")
    for answer in outcome.answers:
        check_answer(outcome, answer)
    if outcome.max_ping_ms > ping_ms:
        outcome.problem("pings", f"ping answered in {outcome.max_ping_ms:.0f} ms while the case ran")
    if broker.impure:
        outcome.problem("stdout", f"not JSON-RPC on stdout: {broker.impure[-1][:200]!r}")
        broker.impure.clear()
    if (rss := broker.rss_kb()) > MEMORY_CEILING_KB:
        outcome.problem("memory", f"the process holds {rss // 1024} MB")
    if broker.proc.poll() is not None:
        outcome.problem("alive", f"the process exited with {broker.proc.returncode}")
    return outcome


def tool_frame(broker: RawBroker, tool: str, arguments: Any) -> tuple[str, bytes]:
    """A tools/call frame and its id."""
    request_id = broker.next_id()
    params = {"name": tool, "arguments": arguments}
    frame = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
    return request_id, json.dumps(frame).encode() + b"\n"


def call_case(
    broker: RawBroker, category: str, case: str, tool: str, arguments: Any, **options: Any
) -> Outcome:
    """One tools/call as a case."""
    request_id, frame = tool_frame(broker, tool, arguments)
    return run_case(broker, category, case, [frame], [request_id], **options)


@dataclass
class Tally:
    """Per category: cases, refused with a code, accepted, problems; printed at the end of a run."""

    cases: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    slow: Counter[str] = field(default_factory=Counter)  # cases with a ping over PING_MS
    details: dict[str, list[str]] = field(default_factory=dict)  # check -> problems

    def add(self, outcome: Outcome) -> None:
        self.cases[outcome.category] += 1
        (self.refused if outcome.refused else self.accepted)[outcome.category] += 1
        if outcome.problems:
            self.problems[outcome.category] += 1
        if outcome.slow_pings_ms:
            self.slow[outcome.category] += 1
        for check, detail in outcome.problems:
            self.details.setdefault(check, []).append(detail)

    def report(self) -> str:
        slow = f"ping>{PING_MS:.0f}ms"
        lines = [f"{'category':<24}{'cases':>8}{'refused':>9}{'accepted':>10}{'problems':>10}{slow:>13}"]
        counters = (self.cases, self.refused, self.accepted, self.problems, self.slow)
        for category in sorted(self.cases):
            lines.append(
                "{:<24}{:>8}{:>9}{:>10}{:>10}{:>13}".format(category, *(c[category] for c in counters))
            )
        lines.append(
            "{:<24}{:>8}{:>9}{:>10}{:>10}{:>13}".format("total", *(sum(c.values()) for c in counters))
        )
        for check, found in sorted(self.details.items()):
            lines.append(f"problems of check {check!r} ({len(found)}):")
            lines += [f"  {detail}" for detail in found[:8]]
        return "\n".join(lines)


@contextlib.contextmanager
def brokers(db: Path, count: int, **settings: Any) -> Iterator[list[RawBroker]]:
    """``count`` initialized raw broker processes on ``db``, closed (stdin EOF) at the end."""
    started = [RawBroker(db, **settings) for _ in range(count)]
    try:
        for broker in started:
            broker.initialize()
        yield started
    finally:
        for broker in started:
            broker.close()
