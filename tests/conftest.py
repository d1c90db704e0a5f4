"""Shared fixtures: a scrubbed environment, brokers on a real SQLite file, and real stdio broker processes."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

from mcp_broker.config import Settings
from mcp_broker.domain import Broker

# Tests are programs exercising the broker, not models: no rate limit unless a test sets one.
UNLIMITED = 1e9

# The ten tools of the SPEC, which every broker process must list.
CORE_TOOLS = {
    "register_protocol",
    "discover_protocols",
    "connect",
    "list_sessions",
    "negotiate",
    "send",
    "broadcast",
    "receive",
    "ack",
    "disconnect",
}


@pytest.fixture(autouse=True)
def _scrub_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer's MCP_BROKER_* setting may leak into a test."""
    for key in list(os.environ):
        if key.startswith("MCP_BROKER_"):
            monkeypatch.delenv(key)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "broker.db"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engine",
        choices=("sqlite", "redis"),
        default="sqlite",
        help="the store the `settings` fixture (and so `brokers`) uses; redis starts a redis-server",
    )


@pytest.fixture
def settings(db_path: Path, request: pytest.FixtureRequest) -> Settings:
    store = str(db_path)
    if request.config.getoption("--engine") == "redis":
        store = request.getfixturevalue("redis_url")
    return Settings(store=store, heartbeat_interval=0.5, rate_per_second=UNLIMITED, rate_burst=UNLIMITED)


class Clock:
    """A wall clock shifted by ``offset`` seconds; monotonic time (deadlines) stays real."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> Clock:
    """The wall clock every broker of the test reads (``brokers`` passes it), so the store sees one timeline."""
    return Clock()


BrokerFactory = Callable[..., Any]


@pytest.fixture
async def brokers(settings: Settings, clock: Clock) -> AsyncIterator[BrokerFactory]:
    """Open as many brokers on one file as a test wants; each is one broker process's view of it."""
    async with AsyncExitStack() as stack:

        async def open_broker(**overrides: Any) -> Broker:
            running = Broker.running(replace(settings, **overrides), clock=clock.time)
            return await stack.enter_async_context(running)

        yield open_broker


def broker_env(db: Path | str, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_BROKER_")}
    env["MCP_BROKER_STORE"] = str(db)
    env["MCP_BROKER_LOG_LEVEL"] = "WARNING"
    env["MCP_BROKER_RATE_PER_SECOND"] = env["MCP_BROKER_RATE_BURST"] = str(UNLIMITED)
    for key, value in settings.items():
        env["MCP_BROKER_" + key.upper()] = str(value)
    return env


@asynccontextmanager
async def broker_process(db: Path | str, mode: str = "legacy", **settings: Any) -> AsyncIterator[Client[Any]]:
    """A real ``python -m mcp_broker`` process over stdio, as an MCP host spawns it; ``db`` may be any store URL."""
    transport = StdioTransport(
        command=sys.executable, args=["-m", "mcp_broker"], env=broker_env(db, **settings), keep_alive=False
    )
    async with Client(transport, mode=mode, timeout=90) as client:  # type: ignore[arg-type]
        yield client


def text_of(result: Any) -> str:
    """The text of a tool's answer (a refusal's code and message)."""
    return result.content[0].text if result.content else ""


async def call(client: Client[Any], tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured result."""
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    assert not result.is_error, f"{tool}({arguments}) was refused: {text_of(result)}"
    assert result.structured_content is not None, f"{tool} returned no structured content"
    return result.structured_content


@pytest.fixture
def spawn(db_path: Path) -> Callable[..., Any]:
    """``async with spawn() as client``: one broker process on the test's database."""

    def _spawn(**settings: Any) -> Any:
        return broker_process(db_path, **settings)

    return _spawn


Spawn = Callable[..., AbstractAsyncContextManager[Client[Any]]]


class Proc:
    """One broker process of a test, closable on its own as a host closes stdin when it quits."""

    def __init__(self, cm: AbstractAsyncContextManager[Client[Any]]) -> None:
        self._cm = cm
        self._client: Client[Any] | None = None

    @property
    def client(self) -> Client[Any]:
        assert self._client is not None, "this broker process is closed"
        return self._client

    async def open(self) -> None:
        self._client = await self._cm.__aenter__()

    async def close(self) -> None:
        """Close stdin as a host does when it quits, and wait for the process to go."""
        if self._client is not None:
            self._client = None
            await self._cm.__aexit__(None, None, None)


P = TypeVar("P", bound=Proc)


@asynccontextmanager
async def started(spawn: Spawn, count: int, kind: type[P] = Proc, **settings: Any) -> AsyncIterator[list[P]]:  # type: ignore[assignment]
    """``count`` broker processes on the test's database, started (and stopped) concurrently."""
    procs = [kind(spawn(**settings)) for _ in range(count)]
    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for proc in procs:
                    tg.start_soon(proc.open)
        yield procs
    finally:
        with anyio.move_on_after(30, shield=True):
            async with anyio.create_task_group() as tg:
                for proc in procs:
                    tg.start_soon(proc.close)


# --- Redis: a real redis-server started by the tests (see redis_server.py) ------------------------

_namespaces = iter(range(1, 1 << 30))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One redis-server for the whole run; tests keep apart by namespace (``redis_url``)."""
    from redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    """A store URL on the shared redis-server, in a namespace of this test's own."""
    return str(redis_server.url(namespace=f"t{next(_namespaces)}"))
