"""Tool profiles: ``--tools core|all|a,b`` decides what tools/list offers; input schemas are lean but
arguments are validated as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import CORE_TOOLS
from fastmcp import Client
from fastmcp.exceptions import ToolError

from mcp_broker import config
from mcp_broker.config import Settings
from mcp_broker.domain import Broker
from mcp_broker.errors import InvalidArgument
from mcp_broker.mcp import build_server
from mcp_broker.mcp.profiles import CORE, Profile, lean_schema, size_of

pytestmark = pytest.mark.anyio


@pytest.fixture
async def broker(tmp_path: Path) -> Any:
    async with Broker.running(Settings(store=tmp_path / "b.db")) as opened:
        yield opened


async def _names(broker: Broker, tools: str) -> set[str]:
    return {t.name for t in await build_server(broker, tools).list_tools()}


def test_core_is_the_spec_ten() -> None:
    assert set(CORE) == CORE_TOOLS


async def test_profiles_list_their_tools(broker: Broker) -> None:
    everything = await _names(broker, "all")
    assert everything > CORE_TOOLS
    assert await _names(broker, "core") == CORE_TOOLS
    assert await _names(broker, "core,release, request") == CORE_TOOLS | {"release", "request"}
    assert await _names(broker, "send,receive,ack") == {"send", "receive", "ack"}
    assert await _names(broker, "core,all") == everything


async def test_the_default_is_the_setting(tmp_path: Path) -> None:
    async with Broker.running(Settings(store=tmp_path / "b.db", tools="core")) as broker:
        assert {t.name for t in await build_server(broker).list_tools()} == CORE_TOOLS


async def test_unknown_tool_names_are_refused_with_the_known_ones(broker: Broker) -> None:
    with pytest.raises(InvalidArgument, match=r"no such tool: nope, sned; use core or all.*receive"):
        build_server(broker, "core,sned,nope")


def test_the_setting_refuses_what_cannot_be_a_tool_list() -> None:
    assert config.parse(["--tools", " core , release "]).tools == "core,release"
    for bad in ("", " , ", "Core", "send;ack", "send ack"):
        with pytest.raises(ValueError, match="tools must be"):
            config.load(None, environ={"MCP_BROKER_TOOLS": bad} if bad.strip() else {"MCP_BROKER_TOOLS": "-"})


async def test_instructions_name_only_offered_tools(broker: Broker) -> None:
    core = build_server(broker, "core").instructions or ""
    assert "connect(name, protocols)" in core and "receive(" in core
    for absent in ("release(", "request(", "message_status", "list_dead_letters"):
        assert absent not in core
    assert "release(" in (build_server(broker, "all").instructions or "")


def test_lean_schema_folds_null_options_and_drops_default_true() -> None:
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "a": {
                "anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}],
                "default": None,
                "description": "d",
            },
            "b": {"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}], "default": None},
            "c": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": 5},
            "d": {"type": "object", "additionalProperties": True},
        },
        "$defs": {
            "M": {"properties": {"x": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}}}
        },
    }
    lean = lean_schema(schema)
    assert lean["additionalProperties"] is False
    # null stays accepted, so the schema keeps saying so (the fuzz tier checks schema and validation agree)
    assert lean["properties"]["a"] == {"type": ["string", "null"], "maxLength": 3, "description": "d"}
    assert lean["properties"]["b"] == {"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]}
    assert lean["properties"]["c"] == schema["properties"]["c"]  # a real default stays
    assert lean["properties"]["d"] == {"type": "object"}
    assert lean["$defs"]["M"]["properties"]["x"] == {"type": ["string", "null"]}


def test_an_optional_enum_keeps_null_among_its_values() -> None:
    """An enum lists every accepted value: folded to a type list, null must join it (found by the long fuzz run)."""
    prop = {"anyOf": [{"enum": ["a", "b"], "type": "string"}, {"type": "null"}], "default": None}
    lean = lean_schema({"type": "object", "properties": {"s": prop}})["properties"]["s"]
    assert lean == {"enum": ["a", "b", None], "type": ["string", "null"]}
    validator = jsonschema.Draft202012Validator(lean)
    assert validator.is_valid(None) and validator.is_valid("a")
    assert not validator.is_valid("c") and not validator.is_valid(1)


async def test_null_for_an_optional_argument_still_works(broker: Broker) -> None:
    async with Client(build_server(broker, "core")) as client:
        listed = {t.name: t for t in await client.list_tools()}
        assert "anyOf" not in listed["discover_protocols"].input_schema["properties"]["name"]
        result = await client.call_tool("discover_protocols", {"name": None, "cursor": None})
        assert result.structured_content == {"protocols": [], "next_cursor": None}
        with pytest.raises(ToolError, match=r"^INVALID_ARGUMENT"):
            await client.call_tool("discover_protocols", {"limit": "5"})
        with pytest.raises(ToolError, match=r"^UNKNOWN_TOOL"):
            await client.call_tool("release", {"message_ids": ["x"]})


async def test_core_costs_less_than_all(broker: Broker) -> None:
    sizes = {}
    for spec in ("core", "all"):
        tools = await build_server(broker, spec).list_tools()
        sizes[spec] = size_of(t.to_mcp_tool() for t in tools)
    assert sizes["core"].tools == 10
    assert sizes["core"].input_bytes < sizes["all"].input_bytes < sizes["all"].total_bytes
    assert sizes["all"].as_dict()["input_tokens"] == round(sizes["all"].input_bytes / 4)
    assert Profile.parse("all").names is None
