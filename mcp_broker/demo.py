"""``mcp-broker demo``: three agents in three real broker processes, talking over one database.

Each agent is a ``python -m mcp_broker`` process spawned over stdio, exactly as an MCP host spawns
it; this module plays the hosts' part and prints what each agent does. It is a CLI command, not the
server, so it prints to stdout. The database is a fresh temporary file unless ``--db`` was given.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

from . import config

REVIEW_SCHEMA = {
    "type": "object",
    "properties": {
        "file": {"type": "string"},
        "verdict": {"enum": ["approve", "changes_requested"]},
        "comment": {"type": "string"},
    },
    "required": ["file"],
    "additionalProperties": False,
}
# review 2.0.0: `comment` became `notes`, and a `priority` field arrived.
REVIEW_V2_SCHEMA = {
    "type": "object",
    "properties": {
        "file": {"type": "string"},
        "verdict": {"enum": ["approve", "changes_requested"]},
        "notes": {"type": "string"},
        "priority": {"enum": ["low", "normal", "high"]},
    },
    "required": ["file", "priority"],
    "additionalProperties": False,
}
UPGRADE = [
    {"op": "rename", "from": "/comment", "to": "/notes"},
    {"op": "set_default", "path": "/priority", "value": "normal"},
]
DOWNGRADE = [{"op": "rename", "from": "/notes", "to": "/comment"}, {"op": "remove", "path": "/priority"}]
BUILD_SCHEMA = {
    "type": "object",
    "properties": {"status": {"enum": ["green", "red"]}, "commit": {"type": "string"}},
    "required": ["status"],
}


class DemoFailed(Exception):
    """A step did not turn out as the demo expects."""


def say(agent: str, text: str) -> None:
    print(f"[{agent}] {text}", flush=True)


def short(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "))


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailed(what)


class Agent:
    """One broker process, driven by its stdio MCP client."""

    def __init__(self, name: str, client: Client[Any]) -> None:
        self.name = name
        self.client = client

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        result = await self.client.call_tool(tool, arguments)
        expect(result.structured_content is not None, f"{tool} returned no structured result")
        return result.structured_content or {}

    async def refused(self, tool: str, **arguments: Any) -> str:
        """Call a tool that should be refused; return the error text."""
        result = await self.client.call_tool(tool, arguments, raise_on_error=False)
        expect(result.is_error, f"{tool} was expected to be refused but succeeded")
        return " ".join(getattr(block, "text", "") for block in result.content)

    async def connect(self, protocols: dict[str, str], features: list[str]) -> dict[str, Any]:
        specs = [{"name": n, "versions": v} for n, v in protocols.items()]
        result = await self.call("connect", name=self.name, protocols=specs, features=features)
        speaks = ", ".join(f"{n} {v}" for n, v in protocols.items())
        how = f"resumed, {result['queue_depth']} waiting" if result["resumed"] else "new"
        say(
            self.name,
            f"connect  speaks {speaks}  features {', '.join(features)}  -> session {result['session_id'][:8]} ({how})",
        )
        return result

    async def send(self, to: str, protocol: str, payload: Any, **extra: Any) -> dict[str, Any]:
        result = await self.call("send", to=to, protocol=protocol, payload=payload, **extra)
        status = result["status"]
        if result["duplicate"]:
            status = (
                f"idempotency_key {extra['idempotency_key']} seen: first answer again, nothing new stored"
            )
        say(self.name, f"-> {to}  {protocol} {result['version']}  {short(payload)}  ({status})")
        return result

    def show(self, m: dict[str, Any], note: str = "") -> None:
        say(
            self.name,
            f"<- {m['sender']}  {m['protocol']} {m['version']}  {short(m['payload'])}  attempt {m['delivery_attempt']}{note}",
        )

    async def receive(self, **arguments: Any) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = (await self.call("receive", **arguments))["messages"]
        for m in messages:
            self.show(m)
        return messages

    async def ack(self, messages: list[dict[str, Any]]) -> None:
        result = await self.call("ack", message_ids=[m["message_id"] for m in messages])
        say(self.name, f"ack {result['acked']} message(s)")
        expect(result["acked"] == len(messages), "ack did not ack every message")


@asynccontextmanager
async def spawn(env: dict[str, str], log: Path, *names: str) -> AsyncIterator[list[Agent]]:
    """Real ``python -m mcp_broker`` processes over stdio, as MCP hosts spawn them; started and stopped
    side by side, because each takes a second or so to import its libraries."""
    clients = [
        Client(
            StdioTransport(
                command=sys.executable, args=["-m", "mcp_broker"], env=env, keep_alive=False, log_file=log
            ),
            mode="legacy",
            timeout=30,
        )
        for _ in names
    ]
    try:
        async with anyio.create_task_group() as tg:
            for client in clients:
                tg.start_soon(client.__aenter__)
        yield [Agent(name, client) for name, client in zip(names, clients, strict=True)]
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            async with anyio.create_task_group() as tg:
                for client in clients:
                    tg.start_soon(client.close)


def child_env(settings: config.Settings, store: str) -> dict[str, str]:
    """The demo's settings, handed to each broker process as MCP_BROKER_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_BROKER_")}
    for field in config.FIELDS:
        env[config.env_name(field)] = str(getattr(settings, field))
    env["MCP_BROKER_STORE"] = store
    return env


async def conversation(env: dict[str, str], log: Path) -> None:
    # Long on purpose: the demo is a script people read top to bottom, as it prints.
    async with AsyncExitStack() as stack:
        author, ci = await stack.enter_async_context(spawn(env, log, "author", "ci"))
        first_reviewer = await stack.enter_async_context(AsyncExitStack())  # goes offline midway
        [reviewer] = await first_reviewer.enter_async_context(spawn(env, log, "reviewer"))
        print("# three broker processes are up; each agent talks only to its own process")

        for proto, schema in (("review", REVIEW_SCHEMA), ("build", BUILD_SCHEMA)):
            caps = ["point_to_point", "broadcast"]
            result = await author.call(
                "register_protocol", name=proto, version="1.0.0", schema=schema, capabilities=caps
            )
            say("author", f"register_protocol {proto} 1.0.0  -> {result['status']}")

        await author.connect({"review": "^1.0", "build": ">=1.0,<2"}, ["python", "code_review"])
        await reviewer.connect({"review": ">=1.0,<2"}, ["python", "code_review", "security"])
        await ci.connect({"build": "^1.0"}, ["ci"])

        deal = await author.call("negotiate", peer="reviewer", required_protocols=["review"])
        agreed = ", ".join(f"{p} {v}" for p, v in deal["agreed"].items())
        common = ", ".join(deal["features"]["common"])
        say(
            "author",
            f"negotiate with reviewer  -> compatible={deal['compatible']}  agreed: {agreed}  common features: {common}",
        )
        expect(
            deal["compatible"] and deal["agreed"].get("review") == "1.0.0", "negotiation did not agree review"
        )

        print("# reviewer long-polls receive(wait_seconds=10); author sends from another process")
        woke: dict[str, Any] = {}

        async def wait_for_review() -> None:
            woke["messages"] = (await reviewer.call("receive", wait_seconds=10))["messages"]
            woke["at"] = time.perf_counter()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_review)
            await anyio.sleep(0.5)  # let the receive reach the reviewer's process and start waiting
            sent_at = time.perf_counter()
            sent = await author.send("reviewer", "review", {"file": "app.py"})
            replied_at = time.perf_counter()
        got = woke["messages"]
        expect(sent["status"] == "delivered", "send to an active reviewer was not delivered")
        expect([m["message_id"] for m in got] == [sent["message_id"]], "reviewer did not get the message")
        # One clock here: the send's request leaving, its answer arriving, the receive's answer arriving.
        reviewer.show(
            got[0],
            f"  (long-poll answered {(woke['at'] - sent_at) * 1000:.1f} ms after the send left; "
            f"the send's own answer took {(replied_at - sent_at) * 1000:.1f} ms)",
        )
        await reviewer.ack(got)

        verdict = {"file": "app.py", "verdict": "approve", "comment": "LGTM"}
        first = await reviewer.send("author", "review", verdict, idempotency_key="r-1")
        again = await reviewer.send("author", "review", verdict, idempotency_key="r-1")
        expect(
            again["duplicate"] and again["message_id"] == first["message_id"],
            "a repeated send was stored twice",
        )
        await author.ack(await author.receive())

        error = await reviewer.refused("send", to="author", protocol="review", payload={"file": 42})
        say("reviewer", f"-> author  review  {short({'file': 42})}  refused: {error[:110]}")
        expect(error.startswith("PAYLOAD_INVALID:"), f"expected PAYLOAD_INVALID, got {error}")

        news = {"status": "green", "commit": "a1b2c3d"}
        result = await ci.call("broadcast", protocol="build", payload=news)
        recipients = ", ".join(f"{r['name']} ({r['status']})" for r in result["recipients"]) or "none"
        skipped = ", ".join(f"{s['name']} ({s['reason']})" for s in result["skipped"]) or "none"
        say(
            "ci",
            f"broadcast build {result['version']}  {short(news)}  -> {result['recipient_count']} recipient(s): {recipients}; skipped: {skipped}",
        )
        expect(
            [r["name"] for r in result["recipients"]] == ["author"], "broadcast reached the wrong sessions"
        )
        await author.ack(await author.receive())

        print("# the reviewer goes offline; a message to it waits in its inbox")
        gone = await reviewer.call("disconnect")
        say("reviewer", f"disconnect  -> {gone['queue_depth']} waiting; process exits")
        await first_reviewer.aclose()
        queued = await author.send("reviewer", "review", {"file": "db.py"})
        expect(queued["status"] == "queued", "a send to a disconnected session was not queued")
        sessions = (await author.call("list_sessions"))["sessions"]
        say("author", "list_sessions  -> " + ", ".join(f"{s['name']} {s['status']}" for s in sessions))

        print("# a new process connects as reviewer and resumes the session")
        [reviewer] = await stack.enter_async_context(spawn(env, log, "reviewer"))
        back = await reviewer.connect({"review": ">=1.0,<2"}, ["python", "code_review", "security"])
        expect(back["resumed"] and back["queue_depth"] == 1, "the reviewer did not resume with its message")
        waiting = await reviewer.receive()
        expect(
            [m["message_id"] for m in waiting] == [queued["message_id"]],
            "the queued message was not received",
        )
        await reviewer.ack(waiting)

        print("# an upgrade: review 2.0.0 renames `comment` to `notes`; adapters bridge 1.x and 2.x")
        await author.call(
            "register_protocol",
            name="review",
            version="2.0.0",
            schema=REVIEW_V2_SCHEMA,
            capabilities=["point_to_point", "broadcast"],
        )
        for source, target, steps in (("1.0.0", "2.0.0", UPGRADE), ("2.0.0", "1.0.0", DOWNGRADE)):
            await author.call(
                "register_adapter", protocol="review", from_version=source, to_version=target, steps=steps
            )
            say("author", f"register_adapter review {source} -> {target}  {short(steps)}")
        await reviewer.connect({"review": "^2.0"}, ["python", "code_review", "security"])
        note = {"file": "api.py", "comment": "please check the retry loop"}
        sent = await author.send("reviewer", "review", note, version="1.0.0")
        expect(sent["delivered_version"] == "2.0.0", "the 1.0.0 message was not adapted to 2.0.0")
        say("author", f"   adapted on delivery via {' -> '.join(sent['adapted_via'])}")
        [got] = await reviewer.receive()
        expect(got["payload"].get("notes") == note["comment"], "the adapter did not rename comment to notes")
        await reviewer.ack([got])
        answer = {"file": "api.py", "verdict": "approve", "notes": "fine now", "priority": "high"}
        back = await reviewer.send("author", "review", answer, version="2.0.0")
        say("reviewer", f"   adapted on delivery via {' -> '.join(back['adapted_via'])}")
        [reply] = await author.receive()
        expect(
            reply["version"] == "1.0.0" and "comment" in reply["payload"],
            "the 2.0.0 answer was not downgraded",
        )
        await author.ack([reply])


def _explicit_store(settings: config.Settings) -> str | None:
    """The store named by --store (or --db), if any: a flag wins over the environment, so a differing
    value came from it."""
    implicit = config.load(None, os.environ).store
    return settings.store if settings.store != implicit else None


async def run_demo(settings: config.Settings, keep: bool) -> int:
    """Run the conversation; 0 when every step did what it should."""
    workdir = Path(tempfile.mkdtemp(prefix="mcp-broker-demo-"))
    db = _explicit_store(settings) or str(workdir / "broker.db")
    log = workdir / "brokers.log"
    print(f"# mcp-broker demo: database {db}")
    started = time.perf_counter()
    failed = False
    try:
        with anyio.fail_after(120):  # generous: a loaded machine starts Python slowly
            await conversation(child_env(settings, db), log)
    except Exception as exc:
        failed = True
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-20:]
            print("last lines of the broker processes' log:", *tail, sep="\n  ", file=sys.stderr)
    if keep or failed:
        print(f"# kept: database {db}, broker log {log}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        return 1
    print(f"# done in {time.perf_counter() - started:.1f} s")
    return 0
