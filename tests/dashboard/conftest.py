"""The dashboard served over a fake Source by a real uvicorn on a free loopback port, and a real chromium."""

from __future__ import annotations

import functools
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from fake_source import FakeSource, demo_source

from mcp_broker.dashboard.app import DashboardConfig
from mcp_broker.dashboard.cli import serve

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


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


@pytest.fixture
def fake() -> FakeSource:
    return demo_source()


StartDashboard = Callable[..., Running]


@pytest.fixture
def start_dashboard(fake: FakeSource) -> Iterator[StartDashboard]:
    """Start a dashboard over the test's fake with the options given (allow_actions, metrics_open)."""
    with ExitStack() as stack:
        yield lambda **options: stack.enter_context(running_dashboard(fake, **options))


def _chromium() -> str | None:
    return shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
    )


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the browser tests (.ci/run installs chromium as root)")
    pytest.skip(f"{reason}; the browser tests need it (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    if executable is None:
        _missing("no chromium on this machine")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, start_dashboard: StartDashboard) -> Iterator[Any]:
    """A fresh page, closed before the dashboards stop; any script error or CSP violation it logs fails the test."""
    context = browser.new_context(viewport={"width": 1360, "height": 820})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    yield page
    context.close()
    assert not problems, f"the page logged errors: {problems}"


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    return target
