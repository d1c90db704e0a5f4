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

from mcp_broker.dashboard.app import DashboardConfig
from mcp_broker.dashboard.cli import serve

from .fake_source import FakeSource

ARTIFACTS = Path(__file__).parent / "artifacts"


@dataclass
class Running:
    config: DashboardConfig
    source: FakeSource

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
    """Serve the app in a thread of its own (its own event loop), as ``mcp-broker dashboard`` would."""
    ready = threading.Event()
    started: dict[str, Any] = {}

    def on_ready(config: DashboardConfig, server: Any) -> None:
        started.update(config=config, server=server)
        ready.set()

    def main() -> None:
        config = DashboardConfig(host="127.0.0.1", port=0, **options)
        anyio.run(functools.partial(serve, source, config, ready=on_ready))

    thread = threading.Thread(target=main, name="dashboard", daemon=True)
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
