"""The Redis engine's own seams: URLs, namespaces, durability at open, errors, wake-ups across processes.

The store contract itself is checked by the contract suite (tests/contract); here is what only a
network engine has. Each test gets its own namespace on one redis-server (``redis_url``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_broker.config import Settings
from mcp_broker.store import StoreUrlError, check_store_url, open_engine
from mcp_broker.store.contract import (
    NewMessage,
    ProtocolRow,
    Retryable,
    SessionClaim,
    Target,
    Unavailable,
)
from mcp_broker.store.redis.connection import RedisUrl, store_error

redis = pytest.importorskip("redis")
from mcp_broker.store.redis import RedisNotifier, RedisStore  # noqa: E402

pytestmark = pytest.mark.anyio


def claim(name: str, owner: str, now: float) -> SessionClaim:
    return SessionClaim(
        new_id=f"id-{name}",
        name=name,
        owner=owner,
        host="h",
        pid=None,
        proc_start=None,
        protocols=json.dumps([{"name": "chat", "versions": ">=1"}]),
        features="[]",
        metadata="{}",
        now=now,
        expect_exists=False,
        expect_owner=None,
    )


def message(sender: str, mid: str, now: float) -> NewMessage:
    return NewMessage(mid, sender, False, "chat", "1.0.0", json.dumps({"n": mid}), 1, now)


# --- URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown", "namespace"),
    [
        ("redis://u:secret@h:6380/2", "redis://u@h:6380/2?namespace=default", "default"),
        ("redis://:secret@h/0?namespace=team-a", "redis://h/0?namespace=team-a", "team-a"),
        ("rediss://h:6379", "rediss://h:6379?namespace=default", "default"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1&namespace=default", "default"),
    ],
)
def test_a_url_is_shown_without_its_password_and_names_its_namespace(
    url: str, shown: str, namespace: str
) -> None:
    parsed = RedisUrl.parse(url)
    assert (parsed.shown, parsed.namespace) == (shown, namespace)
    assert "namespace" not in parsed.connect
    check_store_url(url)


@pytest.mark.parametrize("url", ["unix://relative.sock", "redis://h/zero", "redis://h?namespace={x}"])
def test_a_malformed_redis_url_is_refused_saying_what_to_write(url: str) -> None:
    with pytest.raises(StoreUrlError):
        check_store_url(url)


def test_without_redis_py_a_redis_url_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "redis" else real(name))
    with pytest.raises(StoreUrlError, match=r"pip install 'mcp-broker\[redis\]'"):
        check_store_url("redis://localhost:6379/0")


def test_open_engine_picks_redis_for_each_scheme() -> None:
    for url in ("redis://h:1/0", "rediss://h:1/0", "unix:///tmp/x.sock"):
        store, notifier = open_engine(Settings(store=url))
        assert isinstance(store, RedisStore) and isinstance(notifier, RedisNotifier)


# --- errors ------------------------------------------------------------------------------------------


def test_redis_errors_map_to_the_contracts_family() -> None:
    rx = redis.exceptions
    assert isinstance(store_error(rx.ConnectionError("refused"), "here"), Unavailable)
    assert "Retry" in str(store_error(rx.ConnectionError("refused"), "here"))
    assert isinstance(store_error(rx.TimeoutError(), "here"), Retryable)
    assert isinstance(store_error(rx.BusyLoadingError("loading"), "here"), Retryable)
    assert isinstance(store_error(rx.ResponseError("BUSY Redis is busy running a script"), "here"), Retryable)
    assert isinstance(store_error(rx.ReadOnlyError("READONLY replica"), "here"), Retryable)
    assert isinstance(store_error(rx.NoPermissionError("NOPERM"), "here"), Unavailable)


async def test_a_server_that_is_not_there_is_unavailable_at_open(tmp_path: Path) -> None:
    store = RedisStore(f"unix://{tmp_path}/nobody.sock")
    with anyio.fail_after(10), pytest.raises(Unavailable, match="cannot reach Redis"):
        await store.open()


# --- durability at open ------------------------------------------------------------------------------


async def test_normal_durability_logs_what_a_message_survives(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    store = RedisStore(redis_url)
    await store.open()
    await store.close()
    assert "survives a Redis crash; a power loss or OS crash may cost the last second" in caplog.text


async def test_full_durability_refuses_a_server_that_does_not_fsync_every_write(redis_url: str) -> None:
    with pytest.raises(Unavailable, match="appendfsync always"):
        await RedisStore(redis_url, durability="full").open()


async def test_full_durability_accepts_appendfsync_always(tmp_path: Path) -> None:
    from redis_server import RedisServer

    server = RedisServer(tmp_path / "always", appendfsync="always")
    server.start()
    try:
        store = RedisStore(server.url(), durability="full")
        await store.open()
        await store.close()
    finally:
        server.stop()


# --- namespaces --------------------------------------------------------------------------------------


async def test_namespaces_on_one_server_see_nothing_of_each_other(redis_server: Any) -> None:
    now = time.time()
    a, b = RedisStore(redis_server.url("iso-a")), RedisStore(redis_server.url("iso-b"))
    await a.open()
    await b.open()
    try:
        row = ProtocolRow("chat", "1.0.0", "{}", ["point_to_point"], {}, "fp", now)
        await a.add_protocol(row)
        await a.claim_session(claim("alice", "o1", now))
        await a.claim_session(claim("bob", "o2", now))
        await a.enqueue(message("id-alice", "m1", now), [Target("id-bob")], max_inbox=10, refuse_full=True)
        assert await b.list_protocols() == [] and await b.list_sessions(now) == []
        assert await b.get_protocol("chat", "1.0.0") is None
        assert (await b.message_status("id-alice", ["m1"])).known == set()
        keys = await a.client.keys("*")
        assert all(k.startswith("mb:{") for k in keys)  # every key carries its namespace's hash tag
        assert [k for k in keys if k.startswith("mb:{iso-a}:")] and not [k for k in keys if "iso-b" in k]
    finally:
        await a.close()
        await b.close()


# --- retried calls -----------------------------------------------------------------------------------


async def test_an_enqueue_repeated_after_a_lost_answer_stores_one_message(redis_url: str) -> None:
    """redis-py retries a call whose connection broke; the script must not store the message twice."""
    now = time.time()
    store = RedisStore(redis_url)
    await store.open()
    try:
        await store.claim_session(claim("alice", "o1", now))
        await store.claim_session(claim("bob", "o2", now))
        for _ in range(2):
            out = await store.enqueue(
                message("id-alice", "m1", now), [Target("id-bob")], max_inbox=10, refuse_full=True
            )
            assert out.stored and out.delivered_to == ("id-bob",)
        rows = await store.lease("id-bob", "o2", limit=10, lease_seconds=30, now=now, max_attempts=5)
        assert [r.message_id for r in rows] == ["m1"]
    finally:
        await store.close()


# --- wake-ups ----------------------------------------------------------------------------------------


async def test_a_send_from_another_process_wakes_the_bound_session(redis_url: str) -> None:
    sender_store, receiver_store = RedisStore(redis_url), RedisStore(redis_url)
    await sender_store.open()
    await receiver_store.open()
    sender, receiver = RedisNotifier(sender_store), RedisNotifier(receiver_store)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver.listen)
            tg.start_soon(sender.listen)
            ticket = receiver.ticket()
            await receiver.bind("id-bob")
            with anyio.fail_after(5):
                await ticket.wait()  # subscribing wakes once, for what came while no one listened
            for _ in range(3):
                ticket = receiver.ticket()
                with anyio.fail_after(5):
                    while not ticket.is_set():
                        sender.notify(["id-bob"])
                        with anyio.move_on_after(0.2):
                            await ticket.wait()
            other = receiver.ticket()
            sender.notify(["id-carol"])  # not this process's session: no wake-up
            with anyio.move_on_after(0.3):
                await other.wait()
            assert not other.is_set()
            await receiver.bind(None)
            tg.cancel_scope.cancel()
    finally:
        await sender.close()
        await receiver.close()
        await sender_store.close()
        await receiver_store.close()


async def test_a_watcher_wakes_on_every_notify_from_another_process(redis_url: str) -> None:
    """``watch`` subscribes to the namespace's traffic channel, which every notify publishes to."""
    sender_store, watcher_store = RedisStore(redis_url), RedisStore(redis_url)
    await sender_store.open()
    await watcher_store.open()
    sender, watcher = RedisNotifier(sender_store), RedisNotifier(watcher_store)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.listen)
            ticket = watcher.ticket()
            await watcher.watch()
            with anyio.fail_after(5):
                await ticket.wait()  # subscribed
            for ids in (["id-bob"], []):  # a send, then an ack (which wakes no receiver)
                ticket = watcher.ticket()
                with anyio.fail_after(5):
                    while not ticket.is_set():
                        sender.notify(ids)
                        with anyio.move_on_after(0.2):
                            await ticket.wait()
            tg.cancel_scope.cancel()
    finally:
        await sender.close()
        await watcher.close()
        await sender_store.close()
        await watcher_store.close()


# --- the traffic log ----------------------------------------------------------------------------------


async def test_a_filtered_read_cut_short_by_the_scan_budget_goes_on_from_its_cursor(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcp_broker.store.contract import EventQuery
    from mcp_broker.store.redis import traffic

    now = time.time()
    store = RedisStore(redis_url)
    await store.open()
    try:
        for name, owner in (("alice", "o1"), ("bob", "o2"), ("carol", "o3"), ("dave", "o4")):
            await store.claim_session(claim(name, owner, now))
        for n in range(30):  # to bob, except the first, to dave, and the last, to carol
            to = {0: "id-dave", 29: "id-carol"}.get(n, "id-bob")
            await store.enqueue(
                message("id-alice", f"m{n}", now + n), [Target(to)], max_inbox=100, refuse_full=True
            )
        monkeypatch.setattr(traffic, "SCAN_BUDGET", 10)
        query = EventQuery(since=0, session_id="id-carol")
        page = await store.events(query)
        assert page.events == [] and page.cursor is not None  # cut short, with where to go on
        seen = []
        for _ in range(5):
            page = await store.events(EventQuery(after=page.cursor, session_id="id-carol"))
            seen += [e.message_id for e in page.events]
        assert seen == ["m29"]
        latest = await store.events(EventQuery(session_id="id-dave", limit=5))
        assert latest.events == []  # the latest: only the last ten entries were read
    finally:
        await store.close()
