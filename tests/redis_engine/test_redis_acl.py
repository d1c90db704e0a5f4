"""Shared servers: one Redis ACL user per namespace, made by the README's recipe (``redis/acl.py``).

A real redis-server; the test's admin (the default user) runs the ``ACL SETUSER`` lines for two
teams. Each team's brokers work in their own namespace, wake-ups included; a broker given the other
team's namespace, and a raw client with a team's password, are refused by Redis itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis_server import RedisServer

from mcp_broker.config import Settings
from mcp_broker.store import open_engine
from mcp_broker.store.contract import NewMessage, SessionClaim, Target, Unavailable

redis = pytest.importorskip("redis")
from redis import exceptions as rx  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from mcp_broker.store.redis.acl import setuser  # noqa: E402

pytestmark = pytest.mark.anyio
NOW = 1_700_000_000.0
TEAMS = {"team-a": "pw-a", "team-b": "pw-b"}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    admin = Redis(unix_socket_path=str(server.socket), decode_responses=True)
    try:
        for team, password in TEAMS.items():
            await admin.execute_command(*setuser(team, password, team).split())
        yield server
    finally:
        await admin.aclose()
        server.stop()


def as_user(server: RedisServer, user: str) -> str:
    """A store URL that logs in as ``user`` (redis-py takes them as query parameters on a socket)."""
    return f"unix://{server.socket}?username={user}&password={TEAMS[user]}"


def claim(name: str) -> SessionClaim:
    return SessionClaim(
        new_id=f"id-{name}", name=name, owner=f"owner-{name}", host="h", pid=1, proc_start="s",
        protocols="[]", features="[]", metadata="{}", now=NOW, expect_exists=False, expect_owner=None,
    )  # fmt: skip


def message(sender: str, n: int) -> NewMessage:
    return NewMessage(
        id=f"m{n}-{sender}", sender_id=sender, broadcast=False, protocol="chat", version="1.0.0",
        payload='{"n": 1}', priority=1, created_at=NOW,
    )  # fmt: skip


async def exchange(server: RedisServer, team: str) -> None:
    """Two sessions of ``team`` send, wake and lease, as that team's user."""
    settings = Settings(store=as_user(server, team), namespace=team)
    store, notifier = open_engine(settings)
    await store.open()
    await notifier.open()
    try:
        alice, bob = await store.claim_session(claim("alice")), await store.claim_session(claim("bob"))
        await notifier.bind(bob.id)
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.listen)
            woken = notifier.ticket()
            outcome = await store.enqueue(
                message(alice.id, 1), [Target(bob.id)], max_inbox=10, refuse_full=True
            )
            assert outcome.delivered_to == (bob.id,)
            await anyio.sleep(0.2)  # the subscription is made by listen; a send after it wakes bob
            notifier.notify([bob.id])
            with anyio.fail_after(5):
                await woken.wait()
            leased = await store.lease(
                bob.id, bob.owner or "", limit=10, lease_seconds=30, now=NOW, max_attempts=5
            )
            assert [r.message_id for r in leased] == [f"m1-{alice.id}"]
            tg.cancel_scope.cancel()
    finally:
        await notifier.close()
        await store.close()


async def test_each_teams_brokers_work_in_their_own_namespace(server: RedisServer) -> None:
    await exchange(server, "team-a")
    await exchange(server, "team-b")


async def test_a_broker_in_the_other_teams_namespace_is_refused_by_redis(server: RedisServer) -> None:
    await exchange(server, "team-b")  # something to steal
    store, _ = open_engine(Settings(store=as_user(server, "team-a"), namespace="team-b"))
    await store.open()  # PING and CONFIG GET touch no key
    try:
        for read in (
            store.list_sessions(NOW),
            store.find_session("alice", is_id=False, now=NOW),
            store.list_protocols(),
        ):
            with pytest.raises(Unavailable, match="refused this broker"):
                await read
        with pytest.raises(Unavailable, match="refused this broker"):
            await store.claim_session(claim("mallory"))
    finally:
        await store.close()


async def test_a_raw_client_reaches_only_its_own_keys_and_channels(server: RedisServer) -> None:
    await exchange(server, "team-b")
    raw = Redis(
        unix_socket_path=str(server.socket), username="team-a", password="pw-a", decode_responses=True
    )
    try:
        assert await raw.hgetall("mb:{team-a}:names") == {}  # its own: allowed (and empty)
        refused: list[Any] = [
            raw.hgetall("mb:{team-b}:names"),
            raw.hget("mb:{team-b}:names", "alice"),
            raw.publish("mb:{team-b}:traffic", "!"),
            raw.keys("*"),
            raw.flushall(),
            raw.config_set("appendonly", "no"),
            raw.execute_command("ACL", "LIST"),
            raw.eval("return redis.call('HGETALL', 'mb:{team-b}:names')", 1, "mb:{team-a}:x"),
        ]
        for call in refused:
            with pytest.raises(
                (rx.NoPermissionError, rx.ResponseError), match=r"(?i)permission|NOPERM|can.t access"
            ):
                await call
        pubsub = raw.pubsub()
        with pytest.raises((rx.NoPermissionError, rx.ResponseError), match=r"(?i)permission|NOPERM"):
            await pubsub.subscribe("mb:{team-b}:traffic")
            await pubsub.get_message(timeout=1)
        await pubsub.aclose()
    finally:
        await raw.aclose()
    other = Redis(unix_socket_path=str(server.socket), username="team-a", password="wrong")
    with pytest.raises((rx.AuthenticationError, rx.ConnectionError), match="invalid username-password"):
        await other.ping()
    await other.aclose()


def test_the_readme_gives_the_recipe_this_test_applies() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    for team in TEAMS:
        assert setuser(team, f"CHANGE-ME-{team[-1]}", team) in readme
