"""``mcp-broker doctor``: find each host's entry, check that it starts and that all hosts share one store.

The checks that read only files live here: each host's config file (:mod:`mcp_broker.hosts`), the command its
entry runs (``<command> --version`` must answer within a few seconds), which store each entry selects
(``--store``/``--db`` in its args, else ``MCP_BROKER_STORE``/``MCP_BROKER_DB`` in its env, else the per-user
default), Claude Code's hook commands, and the database file's mode and WAL size.

The checks that need the store (stale sessions, processes gone, version skew between broker processes) take a
list of :class:`SessionRecord` read by the caller, so this module never opens a store: see
:func:`check_sessions`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .. import __version__, config
from . import hooks, hosts, jsonedit

PROBE_SECONDS = 5.0
WAL_WARN_BYTES = 64 * 1024 * 1024
MARK = {"ok": "✓", "info": "·", "warn": "!", "error": "✗"}


@dataclass(frozen=True)
class Finding:
    level: str  # "ok", "info", "warn" or "error"
    subject: str  # what it is about: "Cursor", "store", "session reviewer"
    message: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Entry:
    """Our server entry as one host's config file has it."""

    host: str
    path: Path
    command: str
    args: list[str]
    env: dict[str, str]

    @property
    def title(self) -> str:
        return hosts.TITLES[self.host] + (" (project)" if self.path.name == ".mcp.json" else "")


@dataclass(frozen=True)
class SessionRecord:
    """What :func:`check_sessions` needs to know of one session, as the store reports it.

    ``status`` is ``active``, ``stale`` or ``disconnected``; ``host`` and ``pid`` identify the broker process
    that holds it; ``version`` is that process's ``mcp-broker`` version when the store records it.
    """

    name: str
    status: str
    host: str | None = None
    pid: int | None = None
    last_seen: datetime | None = None
    version: str | None = None
    process_alive: bool | None = None


def store_of(entry: Entry, default: Path | None = None) -> str:
    """The store an entry selects, as a comparable URL (SQLite paths made absolute)."""
    value: str | None = None
    args = entry.args
    for index, arg in enumerate(args):
        for flag in ("--store", "--db"):
            if arg == flag and index + 1 < len(args):
                value = args[index + 1]
            elif arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
        if value is not None:
            break
    value = value or entry.env.get("MCP_BROKER_STORE") or entry.env.get("MCP_BROKER_DB")
    if not value:
        return "sqlite://" + str(default or config.default_db_path())
    if "://" not in value:
        return "sqlite://" + os.path.abspath(os.path.expanduser(value))
    if value.startswith("sqlite:///"):
        return "sqlite://" + os.path.abspath(os.path.expanduser(value[len("sqlite://") :]))
    return value


def redact(url: str) -> str:
    """A store URL fit to print: any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def find_entries(place: hosts.Place) -> tuple[list[Entry], list[Finding]]:
    """Our entry in every host config file that exists (and Claude Code's project ``.mcp.json``)."""
    entries: list[Entry] = []
    findings: list[Finding] = []
    user = hosts.Place(place.environ, place.platform)
    targets = [(host, user.config_file(host)) for host in hosts.HOSTS]
    project = place.project / ".mcp.json" if place.project is not None else None
    if project is not None and project.exists():
        targets.append(("claude-code", project))
    for host, path in targets:
        title = hosts.TITLES[host] + (" (project)" if path.name == ".mcp.json" else "")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            findings.append(Finding("info", title, f"no config file at {path}"))
            continue
        except OSError as exc:
            findings.append(Finding("error", title, f"cannot read {path}: {exc}"))
            continue
        try:
            doc = jsonedit.loads(text) if text.strip() else {}
        except ValueError as exc:
            findings.append(
                Finding("error", title, f"{path} is not valid JSON: {exc}", "fix the file by hand")
            )
            continue
        container = hosts.CONTAINER[host]
        raw = (doc.get(container) or {}).get(hosts.SERVER_NAME) if isinstance(doc, dict) else None
        if raw is None:
            wrong = "mcpServers" if container == "servers" else "servers"
            if isinstance(doc, dict) and hosts.SERVER_NAME in (doc.get(wrong) or {}):
                findings.append(
                    Finding(
                        "error",
                        title,
                        f"the entry is under {wrong!r}, which {title} does not read",
                        f"mcp-broker install {host}",
                    )
                )
            else:
                findings.append(
                    Finding(
                        "info", title, f"no {hosts.SERVER_NAME} entry in {path}", f"mcp-broker install {host}"
                    )
                )
            continue
        if not isinstance(raw, dict) or not isinstance(raw.get("command"), str):
            findings.append(
                Finding("error", title, f"the entry in {path} has no command", f"mcp-broker install {host}")
            )
            continue
        args = [str(a) for a in raw.get("args") or []]
        env = {str(k): str(v) for k, v in (raw.get("env") or {}).items()}
        entries.append(Entry(host, path, raw["command"], args, env))
    return entries, findings


Runner = Callable[..., subprocess.CompletedProcess[str]]


def probe(entry: Entry, *, timeout: float = PROBE_SECONDS, run: Runner = subprocess.run) -> Finding:
    """Whether the entry's command exists and answers ``--version`` in time, and with which version."""
    command = entry.command
    if not os.path.isabs(command):
        found = shutil.which(command)
        if found is None:
            return Finding(
                "error", entry.title, f"{command!r} is not on PATH", f"mcp-broker install {entry.host}"
            )
        note = f"; {command!r} is found on this shell's PATH, which the host may not have"
        command = found
    else:
        note = ""
        if not os.access(command, os.X_OK):
            return Finding(
                "error",
                entry.title,
                f"{command} does not exist or is not executable",
                f"mcp-broker install {entry.host}",
            )
    launch = entry.args[:2] if entry.args[:2] == ["-m", "mcp_broker"] else []
    try:
        done = run(
            [command, *launch, "--version"],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **entry.env},
        )
    except subprocess.TimeoutExpired:
        return Finding("error", entry.title, f"{command} did not answer --version within {timeout:g} s")
    except OSError as exc:
        return Finding(
            "error", entry.title, f"{command} does not start: {exc}", f"mcp-broker install {entry.host}"
        )
    words = done.stdout.split()
    if done.returncode != 0 or len(words) < 2 or words[0] != "mcp-broker":
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        return Finding(
            "error",
            entry.title,
            f"{command} --version failed: {detail[0]}",
            f"mcp-broker install {entry.host}",
        )
    if words[1] != __version__:
        return Finding(
            "warn",
            entry.title,
            f"runs mcp-broker {words[1]}, this one is {__version__}{note}",
            f"mcp-broker install {entry.host}",
        )
    return Finding("ok", entry.title, f"{command} starts (mcp-broker {words[1]}){note}")


def check_stores(entries: Sequence[Entry], default: Path | None = None) -> list[Finding]:
    """All entries must select the same store, or their agents cannot see each other."""
    stores = {entry.title: store_of(entry, default) for entry in entries}
    distinct = sorted(set(stores.values()))
    if len(distinct) <= 1:
        return [Finding("ok", "store", f"every host uses {redact(distinct[0])}")] if distinct else []
    listing = "; ".join(f"{title}: {redact(url)}" for title, url in stores.items())
    return [
        Finding(
            "error",
            "store",
            f"the hosts use {len(distinct)} different stores, so their agents cannot reach each other ({listing})",
            "run mcp-broker install HOST --store URL for each host with the same URL",
        )
    ]


def check_modes(entries: Sequence[Entry], default: Path | None = None) -> list[Finding]:
    """The database (and its WAL and shared-memory files) owner-only; configs holding a password too."""
    findings: list[Finding] = []
    for entry in entries:
        secret = any(urlsplit(v).password for v in entry.env.values() if "://" in v)
        if secret and stat.S_IMODE(entry.path.stat().st_mode) & 0o077:
            findings.append(
                Finding(
                    "warn",
                    entry.title,
                    f"{entry.path} holds a store password and others can read it",
                    f"chmod 600 {shlex.quote(str(entry.path))}",
                )
            )
    for url in sorted(
        {store_of(e, default) for e in entries} or {store_of(Entry("", Path(), "", [], {}), default)}
    ):
        if not url.startswith("sqlite://"):
            continue
        db = Path(url[len("sqlite://") :])
        if not db.exists():
            findings.append(
                Finding("info", "store", f"{db} does not exist yet (the first broker creates it)")
            )
            continue
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
                findings.append(
                    Finding(
                        "error",
                        "store",
                        f"{path} is readable or writable by others",
                        f"chmod 600 {shlex.quote(str(path))}",
                    )
                )
        wal = db.with_name(db.name + "-wal")
        if wal.exists() and wal.stat().st_size > WAL_WARN_BYTES:
            findings.append(
                Finding(
                    "warn",
                    "store",
                    f"{wal} is {wal.stat().st_size // 2**20} MiB: checkpoints are "
                    "held back, usually by a long-lived reader",
                    "restart the broker processes",
                )
            )
    return findings


def check_hooks(place: hosts.Place, entries: Sequence[Entry]) -> list[Finding]:
    """Claude Code's hook commands must run an executable that exists."""
    path = place.claude_settings()
    try:
        doc = jsonedit.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    table = doc.get("hooks") if isinstance(doc, dict) else None
    ours = [
        (event, handler["command"])
        for event, groups in (table.items() if isinstance(table, dict) else [])
        for group in (groups if isinstance(groups, list) else [])
        if hooks.is_ours(group)
        for handler in group["hooks"]
        if isinstance(handler, dict) and isinstance(handler.get("command"), str)
    ]
    findings = []
    for event, command in ours:
        executable = (shlex.split(command) or [""])[0]
        if not (os.path.isabs(executable) and os.access(executable, os.X_OK)):
            findings.append(
                Finding(
                    "error",
                    "Claude Code hooks",
                    f"the {event} hook runs {executable!r}, which is missing",
                    "mcp-broker install claude-code --hooks",
                )
            )
    if ours and not findings:
        findings.append(
            Finding("ok", "Claude Code hooks", f"{len(ours)} hook commands in {path} point at executables")
        )
    if ours and not any(e.host == "claude-code" for e in entries):
        findings.append(
            Finding(
                "warn",
                "Claude Code hooks",
                "the hooks are installed but the server entry is not",
                "mcp-broker install claude-code",
            )
        )
    return findings


def check_configs(
    place: hosts.Place,
    *,
    default: Path | None = None,
    timeout: float = PROBE_SECONDS,
    run: Runner = subprocess.run,
) -> list[Finding]:
    """Every file-based check, host by host, then the store they share."""
    entries, findings = find_entries(place)
    findings += [probe(entry, timeout=timeout, run=run) for entry in entries]
    findings += check_stores(entries, default)
    findings += check_modes(entries, default)
    findings += check_hooks(place, entries)
    return findings


def check_sessions(
    records: Iterable[SessionRecord], *, now: datetime, host: str, stale_after: float = 30.0
) -> list[Finding]:
    """The store-side checks, on session records the caller read from the store.

    * a session shown ``active`` whose broker process on this machine no longer runs (``process_alive`` False);
    * ``stale`` sessions: no heartbeat for ``stale_after`` seconds while not disconnected;
    * version skew: a live session's process runs another ``mcp-broker`` version than this one.
    """
    findings = []
    for record in records:
        subject = f"session {record.name}"
        if record.status == "disconnected":
            continue
        if record.process_alive is False and record.host == host:
            findings.append(
                Finding(
                    "warn",
                    subject,
                    f"its broker process {record.pid} has exited",
                    "nothing to do: the next connect with this name resumes it",
                )
            )
        elif record.status == "stale" or (
            record.last_seen is not None and (now - record.last_seen).total_seconds() > stale_after
        ):
            age = f" for {(now - record.last_seen).total_seconds():.0f} s" if record.last_seen else ""
            findings.append(
                Finding("warn", subject, f"no heartbeat{age}; its process may be suspended or hung")
            )
        if record.version is not None and record.version != __version__:
            findings.append(
                Finding(
                    "warn",
                    subject,
                    f"its process runs mcp-broker {record.version}, this is {__version__}",
                    "restart the host so it starts the installed version",
                )
            )
    return findings


def render(findings: Sequence[Finding]) -> str:
    lines = []
    for f in findings:
        lines.append(
            f"{MARK.get(f.level, '?')} {f.subject}: {f.message}" + (f"\n    fix: {f.fix}" if f.fix else "")
        )
    return "\n".join(lines) + "\n"


def failed(findings: Sequence[Finding]) -> bool:
    return any(f.level == "error" for f in findings)
