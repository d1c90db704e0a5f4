"""A host spawning the server waits for its first answer: serving imports only what serving needs.

The people commands (rich tables, doctor, the dashboard), jsonschema and griffe (FastMCP's docstring
parser) cost about 0.2 s together before the first answer; each is imported when first used instead.
Checked in a fresh interpreter doing what ``python -m mcp_broker`` does up to the first answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_broker import cli

DEFERRED = ["jsonschema", "griffe", "mcp_broker.ops", "mcp_broker.dashboard", "mcp_broker.validation"]

SERVE_UNTIL_FIRST_ANSWER = """
import json, sys, anyio
from mcp_broker import cli, config
argv = ["--db", sys.argv[1]]
args = cli.build_parser(commands=cli.needs_commands(argv)).parse_args(argv)
from mcp_broker.domain import Broker
from mcp_broker.mcp import build_server
from mcp_broker.mcp.transport import serve_stdio

async def main():
    async with Broker.running(config.load(args)) as broker:
        await build_server(broker).list_tools()

anyio.run(main)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("jsonschema", "griffe", "mcp_broker"))))
"""


def test_serving_defers_what_the_first_answer_does_not_need(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SERVE_UNTIL_FIRST_ANSWER, str(tmp_path / "b.db")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert "mcp_broker.domain" in loaded  # the script did reach the server
    early = [m for m in loaded if any(m == d or m.startswith(d + ".") for d in DEFERRED)]
    assert early == []


@pytest.mark.parametrize(
    ("argv", "needs"),
    [
        ([], False),
        (["--db", "/tmp/x.db"], False),
        (["serve", "--namespace", "team"], False),
        (["demo", "--keep"], False),
        (["status"], True),
        (["--db", "/tmp/x.db", "tail"], True),
        (["dashboard", "--port", "0"], True),
        (["--help"], True),
        (["no-such-command"], True),  # the whole parser refuses it, listing the commands
    ],
)
def test_only_the_people_commands_load_their_parsers(argv: list[str], needs: bool) -> None:
    assert cli.needs_commands(argv) is needs
