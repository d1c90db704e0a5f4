"""The README's dashboard section names every metric /metrics exports and every flag of the subcommand."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
from prometheus_client.parser import text_string_to_metric_families

from mcp_broker import cli
from mcp_broker.dashboard.metrics import render_source

from .fake_source import demo_source

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def section() -> str:
    match = re.search(r"^## See it: the dashboard and metrics\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, "README has no '## See it: the dashboard and metrics' section"
    return match.group(1)


def test_every_metric_is_in_the_readme() -> None:
    text = anyio.run(render_source, demo_source()).decode()
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}" in section(), f"README's dashboard section does not name {name}"


def test_every_dashboard_flag_is_in_the_readme() -> None:
    subparsers = next(a for a in cli.build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    dashboard = subparsers.choices["dashboard"]  # type: ignore[attr-defined]
    own = {"--host", "--port", "--open", "--allow-actions", "--metrics-open"}
    flags = {flag for action in dashboard._actions for flag in action.option_strings} & own
    assert flags == own
    for flag in own:
        assert f"`{flag}`" in section(), flag
    for image in re.findall(r"\]\((docs/[^)]+)\)", section()):
        assert (Path(__file__).resolve().parents[2] / image).is_file(), image
