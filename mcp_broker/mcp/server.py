"""The FastMCP server for one broker process: instructions, the tool groups, resources.

Each tool declares its parameters with constraints (they appear in its input schema), calls one
domain method and returns its model (its output schema). Refusals become tool errors that start
with the stable code (errors.py); nothing else happens in this layer.
"""

from __future__ import annotations

from fastmcp import FastMCP

from .. import __version__
from ..domain import Broker
from . import resources, tools_catalog, tools_inbox, tools_messaging, tools_sessions, tools_streams
from .errors import ArgumentErrors, tool_registrar
from .profiles import Profile

# The server's instructions, line by line, each with the tools it names: a profile without them drops it.
INSTRUCTION_LINES: tuple[tuple[tuple[str, ...], str], ...] = (
    ((), "mcp-broker lets you exchange typed messages with other AI agents on this machine."),
    (
        ("connect",),
        "1. connect(name, protocols) first: pick a name others can address you by, and list the protocols you\n"
        "   speak with the versions you accept. Reconnecting with the same name later resumes your inbox.",
    ),
    (
        ("discover_protocols", "register_protocol"),
        "2. discover_protocols to see message types; register_protocol to add one (name, semver, JSON Schema).",
    ),
    (
        ("list_sessions", "negotiate"),
        "3. list_sessions to see who is there; negotiate(peer) to agree protocol versions with one of them.",
    ),
    (
        ("send", "broadcast"),
        "4. send(to, protocol, payload) for one peer, broadcast(protocol, payload) for everyone who speaks it.\n"
        "   Payloads are validated against the protocol's schema; an error says what to fix.",
    ),
    (
        ("receive", "ack"),
        "5. receive(wait_seconds=30) waits for messages; process each one, then ack(message_ids).\n"
        "   Messages you do not ack come back after their lease (delivery_attempt goes up), so ack what you handled.",
    ),
    (("release",), "   release(message_ids) hands one back at once if you cannot handle it now."),
    (
        ("request", "reply"),
        "6. request(to, protocol, payload) asks and waits for a typed answer; whoever receives a message with\n"
        "   kind `request` answers it with reply(message_id, payload).",
    ),
    (
        ("message_status",),
        "7. message_status(message_ids) tells you whether what you sent was received and acked.",
    ),
    (
        ("list_dead_letters", "replay_dead_letters"),
        "   list_dead_letters / replay_dead_letters show and retry messages to you that were given up on.",
    ),
    (
        ("open_stream", "append_chunk"),
        "8. open_stream(to, protocol) then append_chunk(stream_id, payload) sends a long result in ordered parts;\n"
        "   close_stream ends it. A received chunk (kind `chunk`) has stream_id and stream_seq: ack it to get the next.",
    ),
    (("history",), "   history shows what you sent and received; replay_message sends a copy of one again."),
    ((), "Errors start with a stable CODE such as NOT_CONNECTED or UNKNOWN_SESSION, followed by what to do."),
)


def instructions(profile: Profile) -> str:
    """The instructions for the tools this profile offers."""
    lines = [text for tools, text in INSTRUCTION_LINES if all(profile.enabled(t) for t in tools)]
    return "\n".join(lines) + "\n"


INSTRUCTIONS = instructions(Profile.parse("all"))


def build_server(broker: Broker, tools: str | None = None) -> FastMCP:
    """The FastMCP server serving an open ``Broker``, offering the tools of ``tools`` (default: the
    ``tools`` setting); a profile naming no such tool is refused with ``InvalidArgument``."""
    profile = Profile.parse(broker.settings.tools if tools is None else tools)
    mcp = FastMCP(
        "mcp-broker",
        instructions=instructions(profile),
        version=__version__,
        mask_error_details=True,
        middleware=[ArgumentErrors()],
    )
    seen: set[str] = set()
    tool = tool_registrar(mcp, enabled=profile.enabled, seen=seen)
    for group in (tools_catalog, tools_sessions, tools_messaging, tools_inbox, tools_streams):
        group.register(tool, broker)
    profile.check(seen)
    resources.register(mcp, broker)
    return mcp
