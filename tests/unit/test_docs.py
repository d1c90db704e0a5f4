"""The README documents what the code has: every tool, error code, resource and setting, and the test
command CI runs. Add a tool or a setting and this fails until the README says what it does."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from mcp_broker import config
from mcp_broker.config import Settings
from mcp_broker.domain import Broker
from mcp_broker.errors import BrokerError
from mcp_broker.mcp import build_server

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CI_RUN = (ROOT / ".ci" / "run").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def section(title: str) -> str:
    """The README text under the ``## title`` heading, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.MULTILINE | re.DOTALL)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def tool_sections() -> dict[str, str]:
    """Tool name -> the README text under its ``### `name` `` heading."""
    parts = re.split(r"^### `([a-z_]+)`\n", section("Tools"), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def table_rows(text: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|") and not line.startswith("|---")
    ]


def all_error_classes(cls: type[BrokerError] = BrokerError) -> list[type[BrokerError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *all_error_classes(sub)]
    return found


@pytest.fixture
async def server(tmp_path: Path) -> Any:
    async with Broker.running(Settings(store=tmp_path / "b.db")) as broker:
        yield build_server(broker)


@pytest.mark.anyio
async def test_every_tool_is_documented_with_its_parameters(server: Any) -> None:
    tools = await server.list_tools()
    documented = tool_sections()
    assert tools, "the server registers no tools"
    for tool in tools:
        assert tool.description and tool.description.strip(), f"tool {tool.name} has no description"
        assert tool.name in documented, f"README has no '### `{tool.name}`' section"
        text = documented[tool.name]
        for parameter in tool.parameters.get("properties", {}):
            assert f"`{parameter}`" in text, f"README's {tool.name} section does not mention `{parameter}`"
        assert "Result" in text, f"README's {tool.name} section does not say what it returns"
    stale = set(documented) - {tool.name for tool in tools}
    assert not stale, f"README documents tools the server does not have: {sorted(stale)}"


@pytest.mark.anyio
async def test_every_resource_is_documented(server: Any) -> None:
    uris = [str(r.uri) for r in await server.list_resources()]
    uris += [t.uri_template for t in await server.list_resource_templates()]
    assert uris
    documented = {row[0] for row in table_rows(section("Resources"))}
    for uri in uris:
        assert f"`{uri}`" in documented, f"resource {uri} is not in the README's Resources table"


def test_every_error_code_is_in_the_errors_table() -> None:
    rows = {row[0]: row for row in table_rows(section("Errors"))}
    codes = {f"`{cls.code}`" for cls in all_error_classes()}
    assert codes
    for code in codes:
        assert code in rows, f"error code {code} is not in the README's Errors table"
        assert all(cell for cell in rows[code][1:]), f"{code} needs a meaning and what to do"
    unknown = set(rows) - codes - {"code"}
    assert not unknown, f"README lists error codes errors.py does not have: {sorted(unknown)}"


def test_every_setting_is_in_the_configuration_table() -> None:
    def first_code(cell: str) -> str:  # "`--store` (alias `--db`)" -> "`--store`"
        return cell.split(" ", 1)[0]

    rows = {first_code(row[1]): row for row in table_rows(section("Configuration"))}
    defaults = Settings()
    for field in config.FIELDS:
        env = f"`{config.env_name(field)}`"
        assert env in rows, f"{env} is not in the README's Configuration table"
        flag, _, default, meaning = rows[env]
        assert first_code(flag) == f"`--{field.replace('_', '-')}`", (
            f"{env}: the flag should be --{field.replace('_', '-')}"
        )
        assert meaning, f"{env} needs a meaning"
        if field not in ("store", "host_id"):  # the per-user default and the hostname depend on the machine
            value = getattr(defaults, field)
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            assert f"`{shown}`" in default, f"{env}: README says the default is {default}, the code {shown}"


def fenced_commands(text: str) -> list[str]:
    return [
        line
        for block in re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
        for line in block.splitlines()
        if line.strip()
    ]


def readme_test_command() -> list[list[str]]:
    """The README's test one-liner, split into its commands."""
    [line] = [c for c in fenced_commands(section("Try it")) if "pytest" in c]
    return [shlex.split(part) for part in line.split("&&")]


def test_the_first_screen_has_the_two_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:40])
    commands = fenced_commands(first_screen)
    assert any("mcp-broker demo" in c for c in commands), "the demo command is not on the first screen"
    assert any("pytest" in c for c in commands), "the test command is not on the first screen"
    for command in commands:
        assert command.startswith("python3 -m venv .venv && "), (
            f"not self-contained on a fresh clone: {command}"
        )


def test_ci_runs_the_readme_test_command() -> None:
    venv, install, pytest_run = readme_test_command()
    assert venv[:3] == ["python3", "-m", "venv"]
    assert install[0].endswith("/pip") and install[1:] == ["install", "-e", ".[test]"]
    assert pytest_run[0].endswith("/python") and pytest_run[1:3] == ["-m", "pytest"]
    pytest_args = " ".join(pytest_run[1:])

    assert "-e '.[test]'" in CI_RUN, ".ci/run does not install the project with its test extra"
    assert re.search(rf'/bin/python" {re.escape(pytest_args)}$', CI_RUN, re.MULTILINE), (
        f".ci/run does not run the README's test command ({pytest_args})"
    )
    assert "set -euo pipefail" in CI_RUN
    for check in ('ruff" check mcp_broker tests', 'ruff" format --check mcp_broker tests', 'mypy"'):
        assert check in CI_RUN, f".ci/run does not run {check}"

    make_test = re.search(r"^test:.*\n((?:\t.*\n)+)", MAKEFILE, re.MULTILINE)
    assert make_test and f"$(BIN)/python {pytest_args}" in make_test.group(1), (
        "make test differs from the README"
    )
    assert "install -e '.[test]'" in MAKEFILE


def test_the_example_host_config_is_valid() -> None:
    example = json.loads((ROOT / "claude_desktop_config.example.json").read_text())
    entry = example["mcpServers"]["mcp-broker"]
    assert entry["command"] == "mcp-broker" and entry["args"] == []
    known = {config.env_name(field) for field in config.FIELDS}
    assert set(entry.get("env", {})) <= known, "the example sets variables the broker does not read"
    assert "claude_desktop_config.example.json" in README
    assert "claude mcp add" in README and ".cursor/mcp.json" in README
