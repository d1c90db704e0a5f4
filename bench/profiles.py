"""7. Tool profiles: what each ``--tools`` profile costs a host's model context on every turn.

The tool definitions as ``tools/list`` sends them (built in process: the same objects a broker process
serves), in bytes of JSON and in tokens at about 4 bytes each: names, descriptions and input schemas,
then the same with output schemas (which some hosts also put in context).
"""

from __future__ import annotations

from mcp_broker.config import Settings
from mcp_broker.domain import Broker
from mcp_broker.mcp import build_server
from mcp_broker.mcp.profiles import Size, size_of

from .common import Progress, Run

PROFILES = {"core": "core", "core+": "core,release,request,reply,message_status", "all": "all"}


async def measure(db: str) -> dict[str, Size]:
    """Each profile's size, on a broker over the store ``db``."""
    sizes = {}
    async with Broker.running(Settings(store=db)) as broker:
        for label, spec in PROFILES.items():
            tools = await build_server(broker, spec).list_tools()
            sizes[label] = size_of(t.to_mcp_tool() for t in tools)
    return sizes


def table(sizes: dict[str, Size]) -> str:
    """The README's table of profile sizes."""
    lines = [
        "| profile | tools | names + descriptions + input schemas | with output schemas |",
        "|---|---|---|---|",
    ]
    for label, size in sizes.items():
        spec = PROFILES.get(label, label)
        lines.append(
            f"| `{spec}` | {size.tools} | {size.input_bytes:,} B ≈ {Size.tokens(size.input_bytes):,} tokens "
            f"| {size.total_bytes:,} B ≈ {Size.tokens(size.total_bytes):,} tokens |"
        )
    return "\n".join(lines)


async def run_profiles(run: Run) -> None:
    progress = Progress("profiles")
    sizes = await measure(str(run.db("profiles")))
    progress("\n" + table(sizes))
    run.details["profiles"] = {label: size.as_dict() for label, size in sizes.items()}
    for label, size in sizes.items():
        name = label.replace("+", "_plus")
        run.figure(f"profiles.{name}.tools", size.tools, "tools")
        run.figure(
            f"profiles.{name}.input_tokens",
            Size.tokens(size.input_bytes),
            "tokens",
            f"{size.input_bytes:,} B",
        )
        run.figure(
            f"profiles.{name}.total_tokens", Size.tokens(size.total_bytes), "tokens", "with output schemas"
        )
