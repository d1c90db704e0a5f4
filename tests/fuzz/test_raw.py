"""Raw JSON-RPC abuse over a real broker's stdio pipe: every request gets exactly one answer, promptly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fuzz.harness import RawBroker, Tally, brokers, run_case

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PING = b'{"jsonrpc":"2.0","id":"%s","method":"ping"}'
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "again", "version": "0"}}


def _call(request_id: str, params: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}).encode()


def _deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


# (label, frames, the ids of the answers expected: None is an answer with id null)
ABUSE: list[tuple[str, list[bytes], list[Any]]] = [
    ("not-json", [b"not json\n"], [None]),
    ("empty-object", [b"{}\n"], [None]),
    ("truncated", [b'{"jsonrpc":"2.0","id":"t1","method":"pi\n'], ["t1"]),
    ("batch", [b"[" + PING % b"b1" + b"," + PING % b"b2" + b"]\n"], [None]),
    ("empty-batch", [b"[]\n"], [None]),
    *(
        (f"id-{raw.decode()}", [b'{"jsonrpc":"2.0","id":%s,"method":"ping"}\n' % raw], [None])
        for raw in (b"1.5", b"7.0", b"1e3", b"true", b'{"a":1}', b"[1]", b"null")
    ),
    ("id-long-string", [PING % (b"L" * 100_000) + b"\n"], ["L" * 100_000]),
    (
        "id-negative-big",
        [b'{"jsonrpc":"2.0","id":-99999999999999999999,"method":"ping"}\n'],
        [-99999999999999999999],
    ),
    ("wrong-version", [b'{"jsonrpc":"1.0","id":"w1","method":"ping"}\n'], ["w1"]),
    ("no-version", [b'{"id":"w2","method":"ping"}\n'], ["w2"]),
    ("version-number", [b'{"jsonrpc":2.0,"id":"w3","method":"ping"}\n'], ["w3"]),
    ("crlf", [PING % b"c1" + b"\r\n"], ["c1"]),
    ("blank-lines", [b"\n\r\n   \n" + PING % b"c2" + b"\n"], ["c2"]),
    ("two-on-one-line", [PING % b"two-a" + PING % b"two-b" + b"\n"], ["two-a"]),
    ("nul-after", [PING % b"n1" + b"\x00\n"], ["n1"]),
    (
        "bad-utf8",
        [
            _call("u8", {"name": "discover_protocols", "arguments": {"query": "\udcff"}}).replace(
                b"\\udcff", b"\xff"
            )
            + b"\n"
        ],
        ["u8"],
    ),
    (
        "second-initialize",
        [json.dumps({"jsonrpc": "2.0", "id": "i2", "method": "initialize", "params": INIT}).encode() + b"\n"],
        ["i2"],
    ),
    ("unknown-method", [b'{"jsonrpc":"2.0","id":"m1","method":"no/such"}\n'], ["m1"]),
    ("method-not-string", [b'{"jsonrpc":"2.0","id":"m2","method":5}\n'], ["m2"]),
    ("params-array", [_call("p1", [1]) + b"\n"], ["p1"]),
    ("call-without-name", [_call("p2", {"arguments": {}}) + b"\n"], ["p2"]),
    ("call-unknown-tool", [_call("p3", {"name": "no_such_tool", "arguments": {}}) + b"\n"], ["p3"]),
    ("arguments-not-object", [_call("p4", {"name": "list_sessions", "arguments": "x"}) + b"\n"], ["p4"]),
    ("unknown-notification", [b'{"jsonrpc":"2.0","method":"notifications/zz","params":{}}\n'], []),
    (
        "cancel-unknown",
        [b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"zz"}}\n'],
        [],
    ),
    ("stray-response", [b'{"jsonrpc":"2.0","id":"r1","result":{}}\n'], []),
    ("stray-error", [b'{"jsonrpc":"2.0","id":"r2","error":{"code":1,"message":"x"}}\n'], []),
    (
        "deep-100k",
        [b'{"jsonrpc":"2.0","id":"d1","method":"ping","params":' + _deep(100_000) + b"}\n"],
        ["d1"],
    ),
    (
        "deep-notification",
        [b'{"jsonrpc":"2.0","method":"notifications/x","params":' + _deep(100_000) + b"}\n"],
        [],
    ),
    (
        "many-at-once",
        [b"".join(PING % f"many-{i}".encode() + b"\n" for i in range(200))],
        [f"many-{i}" for i in range(200)],
    ),
]


def test_raw_json_rpc_abuse_gets_exactly_one_answer_per_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tally = Tally()
    with brokers(tmp_path / "broker.db", 1) as (broker,):
        for label, frames, expect in ABUSE:
            tally.add(run_case(broker, "raw", label, frames, expect))
        # One line over the 16 MiB limit: answered from its head, the rest discarded, memory bounded.
        over = PING % b"over" + b" " * (16 * 1024 * 1024) + b"\n"
        tally.add(run_case(broker, "raw", "line-over-limit", [over[:-60] + b'"x"}\n'], ["over"]))
        assert "Traceback" not in broker.stderr, broker.stderr[-3000:]
    with capsys.disabled():
        print("\n" + tally.report())
    problems = [detail for found in tally.details.values() for detail in found]
    assert not problems, "\n".join(problems[:20])


def test_a_call_before_initialize_gets_one_answer(tmp_path: Path) -> None:
    broker = RawBroker(tmp_path / "broker.db")
    try:
        outcome = run_case(
            broker,
            "raw",
            "before-initialize",
            [_call("early", {"name": "list_sessions", "arguments": {}}) + b"\n"],
            ["early"],
            ping_ms=60_000,  # the first ping also times the process's start
        )
        assert not outcome.problems, outcome.problems
    finally:
        broker.close()


def test_a_request_without_newline_at_eof_gets_its_answer(tmp_path: Path) -> None:
    broker = RawBroker(tmp_path / "broker.db")
    broker.initialize()
    box = broker._box("eof")
    broker.write(PING % b"eof")
    assert broker.close() == 0
    assert box.get(timeout=5)["result"] == {}
    assert not broker.impure
