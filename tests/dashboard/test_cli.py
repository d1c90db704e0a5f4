"""``mcp-broker metrics`` and ``mcp-broker dashboard`` from the command line, over the fake Source."""

from __future__ import annotations

import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcp_broker import cli
from mcp_broker.config import Settings
from mcp_broker.dashboard import cli as dashboard_cli

from .fake_source import FakeSource


@pytest.fixture
def wired(monkeypatch: pytest.MonkeyPatch, fake: FakeSource) -> list[Settings]:
    """Plug the fake in where the domain's Source will go; records the settings it was opened with."""
    opened: list[Settings] = []

    @asynccontextmanager
    async def open_source(settings: Settings, *, follow: bool = True) -> AsyncIterator[FakeSource]:
        opened.append(settings)
        yield fake

    monkeypatch.setattr(dashboard_cli, "open_source", open_source)
    return opened


def test_metrics_prints_the_text_once(
    wired: list[Settings], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["metrics", "--db", "/tmp/some.db"])
    assert exit_.value.code == 0
    text = capsysbinary.readouterr().out.decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "mcp_broker_messages_sent",
        "mcp_broker_queue_depth",
        "mcp_broker_delivery_latency_seconds",
    } <= names
    assert wired[0].store == "/tmp/some.db"


def test_a_store_no_engine_serves_is_refused_saying_so(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["metrics"], ["dashboard", "--port", "0"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main([*command, "--db", "ftp://example/broker"])
        assert exit_.value.code == 2
        out, err = capsys.readouterr()
        assert out == "" and "unknown store URL scheme" in err


def test_a_port_out_of_range_is_refused(wired: list[Settings], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["dashboard", "--port", "70000"])
    assert exit_.value.code == 2 and "--port" in capsys.readouterr().err and not wired


def test_the_dashboard_flags_parse() -> None:
    args = cli.build_parser().parse_args(
        ["dashboard", "--host", "::1", "--port", "9000", "--open", "--allow-actions"]
    )
    assert (args.host, args.port, args.open, args.allow_actions, args.metrics_open) == (
        "::1",
        9000,
        True,
        True,
        False,
    )
    defaults = cli.build_parser().parse_args(["dashboard"])
    assert (defaults.host, defaults.port, defaults.allow_actions) == ("127.0.0.1", 8765, False)


def test_the_wheel_ships_the_static_files(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(root)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("mcp_broker-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("index.html", "app.js", "style.css"):
        assert f"mcp_broker/dashboard/static/{name}" in names
