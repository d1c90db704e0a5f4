"""One settings object, filled from command-line flags and ``MCP_BROKER_*`` environment variables.

Every setting has a flag ``--some-name`` and a variable ``MCP_BROKER_SOME_NAME``; a flag wins over the
variable, the variable over the default. The README's configuration table is checked against ``FIELDS``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import platformdirs

Durability = Literal["normal", "full"]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TOOL_LIST = re.compile(r"[a-z][a-z_]*(,[a-z][a-z_]*)*")
NAMESPACE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
DEFAULT_NAMESPACE = "default"


def default_db_path() -> Path:
    """The per-user data directory, e.g. ``~/.local/share/mcp-broker/broker.db`` on Linux."""
    return Path(platformdirs.user_data_dir("mcp-broker", appauthor=False)) / "broker.db"


def default_store() -> str:
    return f"sqlite://{default_db_path()}"


@dataclass(frozen=True)
class Settings:
    store: str = dataclasses.field(default_factory=default_store)
    namespace: str = DEFAULT_NAMESPACE
    durability: Durability = "normal"
    stale_after: float = 30.0
    expire_after: float = 600.0
    heartbeat_interval: float = 10.0  # three beats within stale_after; each beat is a write
    max_attempts: int = 5
    max_inbox: int = 1000
    max_payload_bytes: int = 256 * 1024
    max_schema_bytes: int = 64 * 1024
    max_depth: int = 64
    retention_days: float = 7.0
    history_retention_days: float = 7.0
    rate_per_second: float = 20.0
    rate_burst: float = 200.0
    max_sessions: int = 10_000
    max_protocol_versions: int = 10_000
    max_adapters: int = 10_000
    max_open_streams: int = 16
    max_stream_chunks: int = 100_000
    stream_idle_seconds: float = 300.0
    lock_timeout: float = 10.0
    host_id: str = ""  # empty: the machine's hostname
    tools: str = "all"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if isinstance(self.store, os.PathLike):  # a path is a SQLite store; keep it as text, like a URL
            object.__setattr__(self, "store", os.fspath(self.store))


# name -> (type, help). The order is the README's order.
FIELDS: dict[str, tuple[type, str]] = {
    "store": (str, "the shared store: sqlite:///absolute/path.db or a plain path (--db is an alias)"),
    "namespace": (
        str,
        "the namespace this process lives in: sessions, protocols, adapters and messages of one "
        "namespace are invisible to every other (1-32 of a-z 0-9 _ -, starting with a letter or digit)",
    ),
    "durability": (str, "normal (survives any process crash) or full (also survives power loss; slower)"),
    "stale_after": (float, "seconds without heartbeat before a session shows as stale"),
    "expire_after": (float, "seconds without heartbeat before a session counts as disconnected"),
    "heartbeat_interval": (float, "seconds between a process's heartbeats for its own session"),
    "max_attempts": (int, "leases without an ack before a message is dead-lettered"),
    "max_inbox": (int, "waiting messages per inbox before send is refused with INBOX_FULL"),
    "max_payload_bytes": (int, "largest payload, serialized as JSON"),
    "max_schema_bytes": (int, "largest protocol schema, serialized as JSON"),
    "max_depth": (int, "deepest JSON nesting accepted in payloads and schemas"),
    "retention_days": (float, "days to keep long-disconnected sessions (and, by default, finished messages)"),
    "history_retention_days": (float, "days the history keeps finished messages and their events"),
    "rate_per_second": (float, "messages a session may send per second, on average (a token bucket)"),
    "rate_burst": (float, "messages a session may send at once before the rate applies"),
    "max_sessions": (int, "sessions the store keeps at once (disconnected ones until pruned)"),
    "max_protocol_versions": (int, "protocol versions the store keeps, all protocols together"),
    "max_adapters": (int, "adapters the store keeps, all protocols together"),
    "max_open_streams": (int, "open streams one session may hold at once"),
    "max_stream_chunks": (int, "chunks one stream may carry"),
    "stream_idle_seconds": (float, "seconds without a chunk before an open stream is aborted"),
    "lock_timeout": (float, "SQLite: seconds a call waits for a database locked by others before STORE_BUSY"),
    "host_id": (
        str,
        "this machine's name in session records (default: the hostname); process checks apply only "
        "to sessions with the same host_id, heartbeats decide for the others",
    ),
    "tools": (
        str,
        "the tools this process offers: core (the ten of the SPEC), all, or a comma list of tool names "
        "(core may be one of them); unknown names are refused at start",
    ),
    "log_level": (str, "stderr log level: DEBUG, INFO, WARNING, ERROR"),
}


def retention_cutoffs(settings: Settings, now: float) -> tuple[float, float]:
    """What a prune keeps: finished messages and events after the first time, sessions after the second."""
    return now - settings.history_retention_days * 86400, now - settings.retention_days * 86400


def env_name(field: str) -> str:
    return "MCP_BROKER_" + field.upper()


def _convert(field: str, raw: Any) -> Any:
    kind = FIELDS[field][0]
    try:
        value = kind(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field}: {raw!r} is not a valid {kind.__name__}") from exc
    if field == "namespace" and not NAMESPACE.fullmatch(value):
        raise ValueError(
            f"namespace {raw!r}: use 1 to 32 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )
    if field == "durability" and value not in ("normal", "full"):
        raise ValueError("durability must be 'normal' or 'full'")
    if kind in (int, float) and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{field} must be positive (and finite), got {raw!r}")
    if field == "tools":
        value = ",".join(part.strip() for part in str(value).split(",") if part.strip())
        if not value or not TOOL_LIST.fullmatch(value):
            raise ValueError(f"tools must be core, all, or a comma list of tool names, got {raw!r}")
    if field == "log_level":
        value = str(value).upper()
        if value not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return value


def url_namespace(store: str) -> str | None:
    """The namespace a store URL names itself (Redis: ``?namespace=``), or None."""
    if "://" not in store:
        return None
    found = [v for k, v in parse_qsl(urlsplit(store).query, keep_blank_values=True) if k == "namespace"]
    return found[-1] if found else None


def check_namespace(settings: Settings) -> None:
    """Refuse a store URL whose ``?namespace=`` disagrees with the namespace setting."""
    named = url_namespace(settings.store)
    if named is not None and named != settings.namespace:
        raise ValueError(
            f"the store URL names namespace {named!r} but the namespace setting is {settings.namespace!r}; "
            f"set --namespace / MCP_BROKER_NAMESPACE to {named!r}, or drop ?namespace= from the URL"
        )


def add_arguments(parser: argparse.ArgumentParser, *, subcommand: bool = False) -> None:
    """Add one ``--flag`` per setting; defaults stay None so the environment can fill them.

    On a subcommand the flags are optional repeats of the top-level ones (``mcp-broker demo --db X``
    and ``mcp-broker --db X demo`` both work), so they must not overwrite a top-level value with None.
    """
    for field, (_, help_text) in FIELDS.items():
        flags = ["--" + field.replace("_", "-")] + (["--db"] if field == "store" else [])
        parser.add_argument(
            *flags,
            dest=field,
            default=argparse.SUPPRESS if subcommand else None,
            help=f"{help_text} [{env_name(field)}" + (", MCP_BROKER_DB]" if field == "store" else "]"),
        )


def load(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags, then ``MCP_BROKER_*`` variables, then defaults."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in FIELDS:
        raw = getattr(args, field, None) if args is not None else None
        if raw is None:
            raw = environ.get(env_name(field)) or None
        if raw is None and field == "store":
            raw = environ.get("MCP_BROKER_DB") or None  # the older name, kept as an alias
        if raw is not None:
            values[field] = _convert(field, raw)
    if "store" in values and "://" not in values["store"]:
        values["store"] = str(Path(values["store"]).expanduser())
    settings = Settings(**values)
    check_namespace(settings)
    return settings


def parse(argv: Sequence[str]) -> Settings:
    """Convenience for tests: settings from a flag list alone."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return load(parser.parse_args(list(argv)), environ={})
