"""Where each MCP host keeps its server list, and how to add or remove this installation's entry.

Every edit is planned first (a :class:`Change` holds the file's text before and after), so ``--dry-run`` can
show the diff and a second install can say that nothing changes. Applying a change writes a timestamped
backup, then the new text to a temporary file beside the original, and moves it into place with
``os.replace``, keeping the file's mode. Only our member is touched: the rest of the file keeps its bytes,
comments included (see :mod:`mcp_broker.jsonedit`).

Locations (documented by each host; Claude Desktop has no Linux build, the path there follows XDG):

==============  ===========================================================  =============
host            file                                                         servers under
==============  ===========================================================  =============
claude-desktop  macOS ``~/Library/Application Support/Claude/``,             ``mcpServers``
                Windows ``%APPDATA%\\Claude\\``, Linux ``$XDG_CONFIG_HOME/Claude/``
                ``claude_desktop_config.json``
claude-code     user scope ``~/.claude.json``; project scope ``.mcp.json``   ``mcpServers``
cursor          ``~/.cursor/mcp.json``                                       ``mcpServers``
vscode          the user profile's ``mcp.json``: macOS ``~/Library/Application  ``servers``
                Support/Code/User/``, Windows ``%APPDATA%\\Code\\User\\``,
                Linux ``$XDG_CONFIG_HOME/Code/User/``
==============  ===========================================================  =============

Claude Code's hooks live in ``~/.claude/settings.json`` under ``hooks``; see :mod:`mcp_broker.hooks`.
"""

from __future__ import annotations

import difflib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import hooks, jsonedit

SERVER_NAME = "mcp-broker"
HOSTS = ("claude-desktop", "claude-code", "cursor", "vscode")
TITLES = {
    "claude-desktop": "Claude Desktop",
    "claude-code": "Claude Code",
    "cursor": "Cursor",
    "vscode": "VS Code",
}
# VS Code reads "servers" and wants the transport named; the others read "mcpServers".
CONTAINER = {
    "claude-desktop": "mcpServers",
    "claude-code": "mcpServers",
    "cursor": "mcpServers",
    "vscode": "servers",
}
TYPED = {"claude-code", "vscode"}


@dataclass(frozen=True)
class Place:
    """Where a host's configuration lives, for one user and one platform."""

    environ: Mapping[str, str]
    platform: str = sys.platform
    project: Path | None = None  # set for Claude Code's project scope (.mcp.json in that directory)

    @classmethod
    def here(cls, project: Path | None = None) -> Place:
        return cls(os.environ, sys.platform, project)

    @property
    def home(self) -> Path:
        home = self.environ.get("HOME") or self.environ.get("USERPROFILE")
        return Path(home) if home else Path.home()

    def _config_dir(self) -> Path:
        """The per-user application config directory: XDG on Linux, Application Support, %APPDATA%."""
        if self.platform == "darwin":
            return self.home / "Library" / "Application Support"
        if self.platform == "win32":
            appdata = self.environ.get("APPDATA")
            return Path(appdata) if appdata else self.home / "AppData" / "Roaming"
        xdg = self.environ.get("XDG_CONFIG_HOME")
        return Path(xdg) if xdg else self.home / ".config"

    def config_file(self, host: str) -> Path:
        if host == "claude-desktop":
            return self._config_dir() / "Claude" / "claude_desktop_config.json"
        if host == "claude-code":
            return self.project / ".mcp.json" if self.project is not None else self.home / ".claude.json"
        if host == "cursor":
            return self.home / ".cursor" / "mcp.json"
        if host == "vscode":
            return self._config_dir() / "Code" / "User" / "mcp.json"
        raise ValueError(f"unknown host {host!r}; one of {', '.join(HOSTS)}")

    def claude_settings(self) -> Path:
        return self.home / ".claude" / "settings.json"


def launcher() -> list[str]:
    """This installation's command line: its ``mcp-broker`` script, else ``python -m mcp_broker``.

    ``sys.executable`` is not resolved: in a virtual environment it is a link whose directory is the point.
    """
    python = Path(sys.executable).absolute()
    script = python.parent / ("mcp-broker.exe" if sys.platform == "win32" else "mcp-broker")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [str(python), "-m", "mcp_broker"]


def server_entry(
    host: str, existing: Any = None, *, store: str | None = None, argv: list[str] | None = None
) -> dict[str, Any]:
    """Our entry for ``host``, merged into what is already there: other fields and env variables stay."""
    command, *args = argv or launcher()
    entry: dict[str, Any] = dict(existing) if isinstance(existing, dict) else {}
    if host in TYPED:
        entry["type"] = "stdio"
    entry["command"] = command
    entry["args"] = args
    env = dict(entry.get("env") or {}) if isinstance(entry.get("env"), dict) else {}
    if store is not None:
        env["MCP_BROKER_STORE"] = store
    if env:
        entry["env"] = env
    else:
        entry.pop("env", None)
    return entry


class Conflict(RuntimeError):
    """The file changed between planning an edit and writing it (the host rewrote it meanwhile)."""


@dataclass(frozen=True)
class Change:
    """One file's text before and after an edit; None stands for a file that does not exist."""

    path: Path
    before: str | None
    after: str | None
    what: str  # "add mcp-broker to Cursor", for messages

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        old = (self.before or "").splitlines(keepends=True)
        new = (self.after or "").splitlines(keepends=True)
        name = str(self.path)
        lines = difflib.unified_diff(old, new, name if self.before is not None else "/dev/null", name)
        return "".join(
            line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
        )


def _read(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8", newline="") as f:  # newline="": keep CRLF files as they are
            return f.read()
    except FileNotFoundError:
        return None


def _doc(text: str | None) -> Any:
    return jsonedit.loads(text) if text is not None and text.strip() else {}


def _edit(path: Path, what: str, mutate: Callable[[str], str], expected: Callable[[Any], Any]) -> Change:
    """Plan applying ``mutate`` to the file's text, and check the result means ``expected(old value)``."""
    before = _read(path)
    blank = before is None or not before.strip()
    text = "{}\n" if blank else (before or "")
    crlf = "\r\n" in text
    if crlf:
        text = text.replace("\r\n", "\n")
    if jsonedit.parse(text).kind != "object":  # ValueError names line and column
        raise ValueError(f"{path}: the top level is not a JSON object")
    after = mutate(text)
    if after == text:
        return Change(path, before, before, what)
    if blank:
        after = jsonedit.render(jsonedit.loads(after), "  ", "") + "\n"
    elif crlf:
        after = after.replace("\n", "\r\n")
    if jsonedit.loads(after) != expected(_doc(before)):  # a bug must never damage a host's config
        raise RuntimeError(f"{path}: the edit did not produce the intended document; nothing written")
    return Change(path, before, after, what)


def set_member(text: str, path: tuple[str, ...], key: str, value: Any) -> str:
    """``text`` with ``path.key`` set to ``value``, creating the objects on ``path`` that are missing."""
    node, depth = jsonedit.find(jsonedit.parse(text), path)
    if depth < len(path):
        nested: Any = {key: value}
        for name in reversed(path[depth + 1 :]):
            nested = {name: nested}
        return jsonedit.insert(text, node, path[depth], nested)
    if node.kind != "object":
        raise ValueError(f"{'.'.join(path)} is not an object")
    index = node.member(key)
    if index is None:
        return jsonedit.insert(text, node, key, value)
    if jsonedit.value_of(text, node.children[index]) == value:
        return text
    return jsonedit.replace(text, node.children[index], value)


def delete_member(text: str, path: tuple[str, ...], key: str, *, prune: bool = True) -> str:
    """``text`` without ``path.key``; with ``prune``, objects on ``path`` left empty by it go too."""
    root = jsonedit.parse(text)
    node, depth = jsonedit.find(root, path)
    index = node.member(key) if depth == len(path) and node.kind == "object" else None
    if index is None:
        return text
    if prune and path and len(node.children) == 1:
        return delete_member(text, path[:-1], path[-1])
    return jsonedit.remove(text, node, index)


def _servers(doc: Any, container: str) -> dict[str, Any]:
    servers = doc.get(container) if isinstance(doc, dict) else None
    return servers if isinstance(servers, dict) else {}


def plan_install(
    host: str, place: Place, *, store: str | None = None, argv: list[str] | None = None
) -> Change:
    """Our server entry merged into ``host``'s config file."""
    path = place.config_file(host)
    container = CONTAINER[host]
    entry = server_entry(
        host, _servers(_doc(_read(path)), container).get(SERVER_NAME), store=store, argv=argv
    )

    def expected(doc: Any) -> Any:
        return {**doc, container: {**_servers(doc, container), SERVER_NAME: entry}}

    return _edit(
        path,
        f"add {SERVER_NAME} to {TITLES[host]}",
        lambda text: set_member(text, (container,), SERVER_NAME, entry),
        expected,
    )


def plan_uninstall(host: str, place: Place) -> Change:
    """``host``'s config file without our entry (an object left empty by that goes too)."""
    path = place.config_file(host)
    container = CONTAINER[host]

    def expected(doc: Any) -> Any:
        if SERVER_NAME not in _servers(doc, container):
            return doc
        rest = {k: v for k, v in _servers(doc, container).items() if k != SERVER_NAME}
        return {k: v for k, v in doc.items() if k != container} if not rest else {**doc, container: rest}

    return _edit(
        path,
        f"remove {SERVER_NAME} from {TITLES[host]}",
        lambda text: delete_member(text, (container,), SERVER_NAME),
        expected,
    )


def _set_hook_group(text: str, event: str, group: dict[str, Any] | None) -> str:
    """Replace our matcher group under ``hooks.<event>`` by ``group`` (None: just remove ours)."""
    while True:  # remove ours one by one; spans move after each removal
        root = jsonedit.parse(text)
        holder, depth = jsonedit.find(root, ("hooks",))
        index = holder.member(event) if depth == 1 else None
        if index is None:
            return text if group is None else set_member(text, ("hooks",), event, [group])
        array = holder.children[index]
        if array.kind != "array":
            raise ValueError(f"hooks.{event} is not a list")
        values = [jsonedit.value_of(text, item) for item in array.children]
        ours = [i for i, value in enumerate(values) if hooks.is_ours(value)]
        if group is not None and len(ours) == 1 and values[ours[0]] == group:
            return text
        if not ours:
            return text if group is None else jsonedit.insert(text, array, None, group)
        if len(values) == 1 and group is None:
            return delete_member(text, ("hooks",), event)
        text = jsonedit.remove(text, array, ours[0])


def _expected_hooks(doc: Any, groups: Mapping[str, dict[str, Any] | None]) -> Any:
    table = dict(doc.get("hooks") or {})
    touched = False
    for event, group in groups.items():
        current = table.get(event, [])
        kept = [g for g in current if not hooks.is_ours(g)]
        if group is None and len(kept) == len(current):
            continue
        touched = True
        if group is not None:
            kept.append(group)
        if kept:
            table[event] = kept
        else:
            table.pop(event, None)
    if not touched:
        return doc
    if table:
        return {**doc, "hooks": table}
    return {k: v for k, v in doc.items() if k != "hooks"}


def plan_hooks(place: Place, groups: Mapping[str, dict[str, Any] | None]) -> Change:
    """Claude Code's user settings with our hook groups set (a None group: ours removed for that event)."""

    def mutate(text: str) -> str:
        for event, group in groups.items():
            text = _set_hook_group(text, event, group)
        return text

    what = (
        "add the mcp-broker hooks to Claude Code" if any(groups.values()) else "remove the mcp-broker hooks"
    )
    return _edit(place.claude_settings(), what, mutate, lambda doc: _expected_hooks(doc, groups))


def _backup_path(target: Path, now: datetime) -> Path:
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    candidate = target.with_name(f"{target.name}.{stamp}.bak")
    counter = 1
    while candidate.exists():
        candidate = target.with_name(f"{target.name}.{stamp}-{counter}.bak")
        counter += 1
    return candidate


def apply(change: Change, *, now: datetime | None = None) -> Path | None:
    """Write ``change``: backup first, then an atomic replace keeping the file's mode. Returns the backup.

    A new file is created owner-only: the entry's env may carry a store URL with a password.
    """
    if not change.changed or change.after is None:
        return None
    target = change.path.resolve() if change.path.is_symlink() else change.path  # edit a linked file in place
    if _read(target) != change.before:
        raise Conflict(f"{change.path} changed since it was read; run the command again")
    backup = None
    mode = 0o600
    if change.before is not None:
        mode = stat.S_IMODE(target.stat().st_mode)
        backup = _backup_path(target, now or datetime.now(UTC))
        shutil.copy2(target, backup)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(change.after)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return backup
