"""The official MCP Inspector CLI, a client we did not write, drives ``python -m mcp_broker`` over stdio.

Each call below is one ``npx @modelcontextprotocol/inspector --cli`` run: it spawns a broker process,
initializes, makes one request, prints the JSON result and exits. All runs share one database file,
so a later run sees what an earlier one stored.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import CORE_TOOLS

NPX = shutil.which("npx")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(900),
    pytest.mark.skipif(NPX is None, reason="npx is not on PATH: the MCP Inspector CLI needs Node.js"),
]

CHAT_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


def inspector(db: Path, *request: str) -> Any:
    """Run one Inspector CLI request against a fresh broker process on ``db``; its JSON output."""
    assert NPX is not None
    command = [
        NPX,
        "-y",
        "@modelcontextprotocol/inspector",
        "--cli",
        "-e",
        f"MCP_BROKER_DB={db}",
        "-e",
        "MCP_BROKER_LOG_LEVEL=WARNING",
        sys.executable,
        "-m",
        "mcp_broker",
        *request,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_BROKER_")}
    # Generous: the first run on a machine downloads the Inspector.
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=db.parent, env=env)
    assert done.returncode == 0, (
        f"inspector exited {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    )
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"the Inspector printed no JSON result\nstdout: {done.stdout}\nstderr: {done.stderr}")


def test_inspector_lists_the_tools_with_schemas_and_annotations(db_path: Path) -> None:
    tools = {t["name"]: t for t in inspector(db_path, "--method", "tools/list")["tools"]}
    assert set(tools) >= CORE_TOOLS
    for name in CORE_TOOLS:
        tool = tools[name]
        assert tool.get("description"), f"{name} has no description"
        assert tool["inputSchema"]["type"] == "object"
        assert tool.get("outputSchema", {}).get("type") == "object", f"{name} has no output schema"
    for name in ("discover_protocols", "list_sessions"):
        assert tools[name]["annotations"]["readOnlyHint"] is True, f"{name} should say it is read-only"
    for name in ("send", "broadcast", "receive", "ack", "connect", "disconnect", "register_protocol"):
        assert tools[name]["annotations"]["readOnlyHint"] is False, f"{name} writes"
    assert tools["receive"]["inputSchema"]["properties"]["max_messages"]["maximum"] == 100
    assert db_path.exists()


def test_inspector_calls_tools_and_reads_what_another_process_stored(db_path: Path) -> None:
    registered = inspector(
        db_path,
        "--method",
        "tools/call",
        "--tool-name",
        "register_protocol",
        "--tool-arg",
        "name=chat",
        "--tool-arg",
        "version=1.0.0",
        "--tool-arg",
        f"schema={json.dumps(CHAT_SCHEMA)}",
        "--tool-arg",
        'capabilities=["point_to_point", "broadcast"]',
    )
    assert registered.get("isError") is not True, registered
    assert registered["structuredContent"] == {
        "name": "chat",
        "version": "1.0.0",
        "status": "registered",
        "message": "registered chat 1.0.0",
    }

    # A refusal reaches this client as a tool error that starts with its code.
    refused = inspector(db_path, "--method", "tools/call", "--tool-name", "list_sessions")
    assert refused["isError"] is True
    assert refused["content"][0]["text"].startswith("NOT_CONNECTED: ")

    # Another broker process, another Inspector run: the protocol is in the shared file.
    read = inspector(db_path, "--method", "resources/read", "--uri", "broker://protocols/chat/1.0.0")
    [contents] = read["contents"]
    assert contents["uri"] == "broker://protocols/chat/1.0.0"
    assert json.loads(contents["text"]) == CHAT_SCHEMA
