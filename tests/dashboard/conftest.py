"""Fixtures: the demo fake Source, dashboards served over it, and a real headless chromium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from .fake_source import FakeSource, demo_source
from .served import Running, StartDashboard, running_dashboard, store_dashboard

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def fake() -> FakeSource:
    return demo_source()


@pytest.fixture
def start_dashboard(fake: FakeSource) -> Iterator[StartDashboard]:
    """Start a dashboard over the test's fake with the options given (allow_actions, metrics_open)."""
    with ExitStack() as stack:
        yield lambda **options: stack.enter_context(running_dashboard(fake, **options))


@pytest.fixture
def start_store_dashboard() -> Iterator[Callable[..., Running]]:
    """Start a dashboard over the broker's own Source: ``start_store_dashboard(settings, allow_actions=...)``.

    Ask for it before ``page``, so the page closes before the dashboard stops."""
    with ExitStack() as stack:
        yield lambda settings, **options: stack.enter_context(store_dashboard(settings, **options))


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
