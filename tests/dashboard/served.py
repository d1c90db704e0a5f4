"""A dashboard served in a thread by a real uvicorn on a free loopback port, and screenshots of its page."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from mcp_broker.config import Settings
from mcp_broker.dashboard.app import DashboardConfig
from mcp_broker.dashboard.cli import serve
from mcp_broker.dashboard.source import Source
from mcp_broker.dashboard.store_source import open_store_source

from .fake_source import FakeSource

ARTIFACTS = Path(__file__).parent / "artifacts"


@dataclass
class Running:
    config: DashboardConfig
    source: Any  # the FakeSource a test drives, or the broker's own Source

    @property
    def origin(self) -> str:
        return self.config.origin

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def token(self) -> str:
        return self.config.token


@contextmanager
def running_dashboard(source: FakeSource, **options: Any) -> Iterator[Running]:
    """Serve the app over ``source`` in a thread of its own (its own event loop), as ``mcp-broker dashboard`` would."""

    async def main(config: DashboardConfig, ready: Callable[[DashboardConfig, Any], None]) -> None:
        await serve(source, config, ready=ready)

    with _serving(main, source, **options) as running:
        yield running


@contextmanager
def store_dashboard(settings: Settings, **options: Any) -> Iterator[Running]:
    """The dashboard over the broker's own Source on the store ``settings`` name, served in a thread."""
    opened: dict[str, Source] = {}

    async def main(config: DashboardConfig, ready: Callable[[DashboardConfig, Any], None]) -> None:
        async with open_store_source(settings) as source:
            opened["source"] = source
            await serve(source, config, ready=ready)

    with _serving(main, None, **options) as running:
        running.source = opened["source"]
        yield running


@contextmanager
def _serving(main: Callable[..., Any], source: Any, **options: Any) -> Iterator[Running]:
    ready = threading.Event()
    started: dict[str, Any] = {}

    def on_ready(config: DashboardConfig, server: Any) -> None:
        started.update(config=config, server=server)
        ready.set()

    def run() -> None:
        config = DashboardConfig(host="127.0.0.1", port=0, **options)
        anyio.run(functools.partial(main, config, on_ready))

    thread = threading.Thread(target=run, name="dashboard", daemon=True)
    thread.start()
    assert ready.wait(10), "the dashboard did not start"
    try:
        yield Running(started["config"], source)
    finally:
        started["server"].should_exit = True
        thread.join(10)
        assert not thread.is_alive(), "the dashboard did not stop"


StartDashboard = Callable[..., Running]


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    return target
