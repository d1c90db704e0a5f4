"""install / uninstall / doctor against a temporary HOME: other entries kept, backups, idempotence, restore."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mcp_broker import __version__
from mcp_broker.ops import doctor, hooks, hosts, jsonedit

OTHER = {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]}


def home_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_BROKER_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), APPDATA=str(home / "AppData"))
    return env


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_broker.ops.cli", *args],
        capture_output=True,
        text=True,
        env=home_env(home),
        cwd=home,
        timeout=60,
    )


def seed(path: Path, container: str) -> str:
    """A config file as a person might have left it: other servers, other keys, their own layout."""
    text = (
        "{\n"
        '    "theme": "dark",\n'
        f'    "{container}": {{\n'
        f'        "filesystem": {json.dumps(OTHER)}\n'
        "    },\n"
        '    "zz_last": [1, 2, 3]\n'
        "}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o640)
    return text


@pytest.mark.parametrize("host", hosts.HOSTS)
def test_install_keeps_the_rest_backs_up_is_idempotent_and_uninstall_restores(
    tmp_path: Path, host: str
) -> None:
    path = hosts.Place(home_env(tmp_path), sys.platform).config_file(host)
    original = seed(path, hosts.CONTAINER[host])

    done = cli(tmp_path, "install", host, "--store", "sqlite:///srv/agents.db")
    assert done.returncode == 0, done.stderr
    doc = json.loads(path.read_text())
    assert doc["theme"] == "dark" and doc["zz_last"] == [1, 2, 3]
    servers = doc[hosts.CONTAINER[host]]
    assert list(servers) == ["filesystem", "mcp-broker"] and servers["filesystem"] == OTHER
    entry = servers["mcp-broker"]
    assert Path(entry["command"]).is_absolute() and entry["env"] == {
        "MCP_BROKER_STORE": "sqlite:///srv/agents.db"
    }
    assert (entry.get("type") == "stdio") == (host in ("claude-code", "vscode"))
    assert path.stat().st_mode & 0o777 == 0o640
    backups = list(path.parent.glob(path.name + ".*.bak"))
    assert len(backups) == 1 and backups[0].read_text() == original

    again = cli(tmp_path, "install", host, "--store", "sqlite:///srv/agents.db")
    assert again.returncode == 0 and "nothing to change" in again.stdout
    assert len(list(path.parent.glob(path.name + ".*.bak"))) == 1

    gone = cli(tmp_path, "uninstall", host)
    assert gone.returncode == 0, gone.stderr
    assert path.read_text() == original


def test_dry_run_prints_the_diff_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / ".cursor" / "mcp.json"
    original = seed(path, "mcpServers")
    done = cli(tmp_path, "install", "cursor", "--dry-run")
    assert done.returncode == 0
    assert f"+++ {path}" in done.stdout and '+        "mcp-broker": {' in done.stdout
    assert path.read_text() == original and not list(path.parent.glob("*.bak"))


def test_new_file_is_created_owner_only(tmp_path: Path) -> None:
    assert cli(tmp_path, "install", "vscode").returncode == 0
    path = tmp_path / ".config" / "Code" / "User" / "mcp.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["servers"]["mcp-broker"]["type"] == "stdio"


def test_comments_trailing_commas_and_crlf_survive(tmp_path: Path) -> None:
    text = '// my servers\r\n{\r\n\t"servers": {\r\n\t\t/* keep */ "x": {"type": "stdio", "command": "x"},\r\n\t},\r\n}\r\n'
    place = hosts.Place(home_env(tmp_path), "linux")
    path = place.config_file("vscode")
    path.parent.mkdir(parents=True)
    path.write_bytes(text.encode())
    change = hosts.plan_install("vscode", place, argv=["/opt/bin/mcp-broker"])
    assert change.after is not None and "// my servers" in change.after and "/* keep */" in change.after
    assert "\n" not in change.after.replace("\r\n", "")
    hosts.apply(change)
    assert jsonedit.loads(path.read_text())["servers"]["mcp-broker"]["command"] == "/opt/bin/mcp-broker"
    hosts.apply(hosts.plan_uninstall("vscode", place))
    assert path.read_bytes() == text.encode()


def test_an_existing_entry_is_updated_keeping_its_own_env(tmp_path: Path) -> None:
    place = hosts.Place(home_env(tmp_path), "linux")
    path = place.config_file("cursor")
    path.parent.mkdir(parents=True)
    old = {"command": "/old/mcp-broker", "args": ["--db", "/x"], "env": {"MCP_BROKER_LOG_LEVEL": "DEBUG"}}
    path.write_text(json.dumps({"mcpServers": {"mcp-broker": old}}))
    hosts.apply(hosts.plan_install("cursor", place, store="redis://h:6379/0", argv=["/new/mcp-broker"]))
    entry = json.loads(path.read_text())["mcpServers"]["mcp-broker"]
    assert entry == {
        "command": "/new/mcp-broker",
        "args": [],
        "env": {"MCP_BROKER_LOG_LEVEL": "DEBUG", "MCP_BROKER_STORE": "redis://h:6379/0"},
    }


def test_a_symlinked_config_is_edited_where_it_lives(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "claude.json"
    seed(real, "mcpServers")
    (tmp_path / ".claude.json").symlink_to(real)
    assert cli(tmp_path, "install", "claude-code").returncode == 0
    assert (tmp_path / ".claude.json").is_symlink()
    assert "mcp-broker" in json.loads(real.read_text())["mcpServers"]


def test_invalid_json_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / ".cursor" / "mcp.json"
    path.parent.mkdir()
    path.write_text('{"mcpServers": {,}')
    done = cli(tmp_path, "install", "cursor")
    assert done.returncode == 1 and "line 1 column" in done.stderr
    assert path.read_text() == '{"mcpServers": {,}'


def test_claude_code_project_scope_writes_mcp_json(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    assert (
        cli(tmp_path, "install", "claude-code", "--scope", "project", "--project", str(project)).returncode
        == 0
    )
    assert json.loads((project / ".mcp.json").read_text())["mcpServers"]["mcp-broker"]["type"] == "stdio"
    assert not (tmp_path / ".claude.json").exists()


def test_hooks_are_added_to_settings_and_removed_by_uninstall(tmp_path: Path) -> None:
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    mine = {"hooks": [{"type": "command", "command": "notify-send done"}]}
    original = json.dumps({"model": "opus", "hooks": {"Stop": [mine]}}, indent=2) + "\n"
    settings.write_text(original)

    assert cli(tmp_path, "install", "claude-code", "--hooks").returncode == 0
    table = json.loads(settings.read_text())["hooks"]
    assert set(table) == {"Stop", "SessionStart", "UserPromptSubmit"}
    assert table["Stop"][0] == mine and hooks.is_ours(table["Stop"][1])
    stop = table["Stop"][1]["hooks"][0]
    assert stop["asyncRewake"] is True
    executable, *rest = stop["command"].split()
    assert Path(executable).is_absolute() and rest[:3] == ["hook", "claude-code", "Stop"]

    again = cli(tmp_path, "install", "claude-code", "--hooks")
    assert again.stdout.count("nothing to change") == 2

    assert cli(tmp_path, "uninstall", "claude-code").returncode == 0
    assert settings.read_text() == original
    assert json.loads((tmp_path / ".claude.json").read_text()) == {}


def test_hooks_only_for_claude_code(tmp_path: Path) -> None:
    assert cli(tmp_path, "install", "cursor", "--hooks").returncode == 2


def test_config_locations_per_platform(tmp_path: Path) -> None:
    env = {"HOME": "/h", "XDG_CONFIG_HOME": "/h/.xdg", "APPDATA": "C:/Users/u/AppData/Roaming"}
    linux, mac, win = (hosts.Place(env, p) for p in ("linux", "darwin", "win32"))
    assert linux.config_file("claude-desktop") == Path("/h/.xdg/Claude/claude_desktop_config.json")
    assert mac.config_file("claude-desktop") == Path(
        "/h/Library/Application Support/Claude/claude_desktop_config.json"
    )
    assert win.config_file("claude-desktop") == Path(
        "C:/Users/u/AppData/Roaming/Claude/claude_desktop_config.json"
    )
    assert mac.config_file("vscode") == Path("/h/Library/Application Support/Code/User/mcp.json")
    assert win.config_file("vscode") == Path("C:/Users/u/AppData/Roaming/Code/User/mcp.json")
    assert linux.config_file("cursor") == Path("/h/.cursor/mcp.json")
    assert linux.config_file("claude-code") == Path("/h/.claude.json")
    assert hosts.Place(env, "linux", Path("/p")).config_file("claude-code") == Path("/p/.mcp.json")


# ---- doctor -----------------------------------------------------------------------------------------------


def entry(host: str, **env: str) -> doctor.Entry:
    return doctor.Entry(host, Path("/cfg"), "/bin/mcp-broker", [], env)


def test_doctor_after_install_finds_a_working_entry(tmp_path: Path) -> None:
    db = tmp_path / "agents.db"
    assert cli(tmp_path, "install", "cursor", "--store", str(db)).returncode == 0
    done = cli(tmp_path, "doctor", "--json")
    report = json.loads(done.stdout)
    by_subject = {f["subject"]: f for f in report["findings"] if f["level"] != "info"}
    assert (
        by_subject["Cursor"]["level"] == "ok"
        and f"mcp-broker {__version__}" in by_subject["Cursor"]["message"]
    )
    assert by_subject["store"]["message"] == f"every host uses sqlite://{db}"
    assert done.returncode == 0 and report["ok"] is True


def test_doctor_says_when_hosts_use_different_stores() -> None:
    entries = [entry("cursor", MCP_BROKER_STORE="sqlite:///a.db"), entry("vscode", MCP_BROKER_DB="/b.db")]
    [finding] = doctor.check_stores(entries)
    assert finding.level == "error" and "2 different stores" in finding.message and finding.fix
    same = [entry("cursor", MCP_BROKER_DB="/a.db"), entry("vscode", MCP_BROKER_STORE="sqlite:///a.db")]
    assert doctor.check_stores(same)[0].level == "ok"
    assert doctor.store_of(entry("cursor"), default=Path("/d/broker.db")) == "sqlite:///d/broker.db"
    assert doctor.redact("redis://u:secret@h:6379/0") == "redis://u:***@h:6379/0"


def test_doctor_flags_a_missing_command_and_an_open_database(tmp_path: Path) -> None:
    gone = doctor.Entry("cursor", tmp_path / "mcp.json", str(tmp_path / "nope"), [], {})
    assert doctor.probe(gone).level == "error"
    db = tmp_path / "broker.db"
    db.write_bytes(b"")
    db.chmod(0o644)
    findings = doctor.check_modes([entry("cursor", MCP_BROKER_DB=str(db))])
    assert [f.level for f in findings] == ["error"] and findings[0].fix == f"chmod 600 {db}"


def test_doctor_session_checks_take_records() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    records = [
        doctor.SessionRecord("a", "active", "me", 10, now, __version__, True),
        doctor.SessionRecord("b", "active", "me", 11, now, __version__, False),
        doctor.SessionRecord("c", "stale", "me", 12, now - timedelta(seconds=90), __version__, True),
        doctor.SessionRecord("d", "active", "me", 13, now, "0.0.1", True),
        doctor.SessionRecord("e", "disconnected", "me", 14, now - timedelta(days=1), "0.0.1", False),
    ]
    found = {(f.subject, f.level) for f in doctor.check_sessions(records, now=now, host="me")}
    assert found == {("session b", "warn"), ("session c", "warn"), ("session d", "warn")}
