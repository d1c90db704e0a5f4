"""Settings: command-line flags win over ``MCP_BROKER_*`` variables, which win over the defaults."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mcp_broker.config import FIELDS, Settings, add_arguments, default_db_path, env_name, load, parse

# One valid, non-default raw value per setting, and what it becomes.
SAMPLES: dict[str, tuple[str, Any]] = {
    "store": ("/tmp/elsewhere/broker.db", "/tmp/elsewhere/broker.db"),
    "namespace": ("team-a", "team-a"),
    "durability": ("full", "full"),
    "stale_after": ("12.5", 12.5),
    "expire_after": ("90", 90.0),
    "heartbeat_interval": ("2", 2.0),
    "max_attempts": ("3", 3),
    "max_inbox": ("50", 50),
    "max_payload_bytes": ("1024", 1024),
    "max_schema_bytes": ("2048", 2048),
    "max_depth": ("16", 16),
    "retention_days": ("0.5", 0.5),
    "history_retention_days": ("30", 30.0),
    "rate_per_second": ("2.5", 2.5),
    "rate_burst": ("10", 10.0),
    "max_sessions": ("100", 100),
    "max_protocol_versions": ("200", 200),
    "max_adapters": ("300", 300),
    "max_open_streams": ("4", 4),
    "max_stream_chunks": ("500", 500),
    "stream_idle_seconds": ("60", 60.0),
    "lock_timeout": ("2.5", 2.5),
    "host_id": ("machine-b", "machine-b"),
    "tools": ("core, release", "core,release"),
    "log_level": ("debug", "DEBUG"),
}


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def from_flags_and_env(argv: list[str], environ: dict[str, str]) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return load(parser.parse_args(argv), environ=environ)


def test_every_setting_has_a_field_a_flag_and_a_sample() -> None:
    assert list(FIELDS) == [f.name for f in dataclasses.fields(Settings)]
    assert set(SAMPLES) == set(FIELDS)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    helps = {a.dest: a for a in parser._actions if a.dest in FIELDS}
    for field in FIELDS:
        action = helps[field]
        assert action.option_strings == [flag(field)] + (["--db"] if field == "store" else [])
        assert action.default is None
        assert env_name(field) in (action.help or "")


def test_env_names() -> None:
    assert env_name("db") == "MCP_BROKER_DB"
    assert env_name("stale_after") == "MCP_BROKER_STALE_AFTER"


def test_defaults() -> None:
    settings = parse([])
    assert settings == Settings()
    assert settings.store == f"sqlite://{default_db_path()}"
    assert default_db_path().name == "broker.db" and "mcp-broker" in default_db_path().parts
    assert (settings.durability, settings.stale_after, settings.expire_after) == ("normal", 30.0, 600.0)
    assert (settings.max_attempts, settings.max_inbox) == (5, 1000)
    assert (settings.max_payload_bytes, settings.max_schema_bytes, settings.max_depth) == (
        256 * 1024,
        64 * 1024,
        64,
    )
    assert load(None, environ={}) == Settings()


def test_default_db_follows_the_user_data_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    if sys.platform.startswith("linux"):
        assert default_db_path() == tmp_path / "data" / "mcp-broker" / "broker.db"


@pytest.mark.parametrize("field", list(FIELDS))
def test_each_flag(field: str) -> None:
    raw, value = SAMPLES[field]
    settings = parse([flag(field), raw])
    assert getattr(settings, field) == value
    # Nothing else moved.
    assert dataclasses.replace(settings, **{field: getattr(Settings(), field)}) == Settings()


@pytest.mark.parametrize("field", list(FIELDS))
def test_each_environment_variable(field: str) -> None:
    raw, value = SAMPLES[field]
    settings = load(None, environ={env_name(field): raw})
    assert getattr(settings, field) == value


def test_flag_beats_environment_beats_default() -> None:
    environ = {"MCP_BROKER_STALE_AFTER": "7", "MCP_BROKER_MAX_INBOX": "9", "MCP_BROKER_DURABILITY": "full"}
    settings = from_flags_and_env(["--stale-after", "3", "--durability", "normal"], environ)
    assert settings.stale_after == 3.0  # flag over variable
    assert settings.durability == "normal"
    assert settings.max_inbox == 9  # variable over default
    assert settings.expire_after == 600.0  # default


def test_load_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_BROKER_MAX_ATTEMPTS", "8")
    assert load().max_attempts == 8


def test_empty_environment_variable_means_unset() -> None:
    assert load(None, environ={"MCP_BROKER_DB": "", "MCP_BROKER_STALE_AFTER": ""}) == Settings()


def test_unrelated_environment_is_ignored() -> None:
    assert load(None, environ={"BROKER_DB": "/x", "MCP_BROKER": "y", "mcp_broker_db": "/z"}) == Settings()


def test_store_path_expands_the_home_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse(["--db", "~/agents/broker.db"]).store == str(tmp_path / "agents" / "broker.db")
    assert load(None, environ={"MCP_BROKER_DB": "~/b.db"}).store == str(tmp_path / "b.db")
    assert parse(["--store", "sqlite:///abs/b.db"]).store == "sqlite:///abs/b.db"  # URLs pass unchanged


def test_db_is_an_alias_of_store() -> None:
    assert parse(["--db", "/x/a.db"]) == parse(["--store", "/x/a.db"])
    assert load(None, environ={"MCP_BROKER_DB": "/x/a.db"}).store == "/x/a.db"
    both = {"MCP_BROKER_DB": "/x/old.db", "MCP_BROKER_STORE": "/x/new.db"}
    assert load(None, environ=both).store == "/x/new.db"  # the newer name wins


def test_a_path_object_is_kept_as_text() -> None:
    assert Settings(store=Path("/x/a.db")).store == "/x/a.db"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "raw", "message"),
    [
        ("stale_after", "soon", "stale_after: 'soon' is not a valid float"),
        ("expire_after", "", "expire_after"),
        ("max_attempts", "2.5", "max_attempts: '2.5' is not a valid int"),
        ("max_inbox", "lots", "max_inbox"),
        ("max_depth", "0", "max_depth must be positive"),
        ("max_payload_bytes", "-1", "must be positive"),
        ("heartbeat_interval", "0", "must be positive"),
        ("lock_timeout", "-0.5", "must be positive"),
        ("retention_days", "-7", "must be positive"),
        ("durability", "paranoid", "durability must be 'normal' or 'full'"),
        ("durability", "FULL", "durability"),
    ],
)
def test_invalid_values_are_refused(field: str, raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse([f"{flag(field)}={raw}"])
    if raw:  # an empty variable means unset, so only non-empty ones can be wrong
        with pytest.raises(ValueError, match=message):
            load(None, environ={env_name(field): raw})


@pytest.mark.parametrize("raw", ["-inf", "-Infinity"])
@pytest.mark.parametrize("field", [f for f, (kind, _) in FIELDS.items() if kind is float])
def test_negative_infinity_is_refused(field: str, raw: str) -> None:
    with pytest.raises(ValueError, match=f"{field} must be positive"):
        parse([f"{flag(field)}={raw}"])


@pytest.mark.parametrize(
    ("field", "raw"), [("stale_after", "nan"), ("lock_timeout", "nan"), ("lock_timeout", "inf")]
)
def test_non_finite_numbers_are_refused(field: str, raw: str) -> None:
    """``float()`` accepts 'nan' and 'inf'; neither is a usable number of seconds.

    Accepted today: with ``stale_after=nan`` every comparison is false, so every session shows as
    active forever; ``lock_timeout=inf``/``nan`` makes ``SqliteStore.open`` raise OverflowError /
    ValueError on ``PRAGMA busy_timeout`` (a traceback, and the process then hangs on exit).
    """
    with pytest.raises(ValueError, match=field):
        parse([f"{flag(field)}={raw}"])
    with pytest.raises(ValueError, match=field):
        load(None, environ={env_name(field): raw})


@pytest.mark.parametrize("raw", ["LOUD", "BASIC_FORMAT"])
def test_unknown_log_level_is_refused(raw: str) -> None:
    """The help lists DEBUG, INFO, WARNING, ERROR; a name that is no level at all must be refused.

    Accepted today: ``cli._setup_logging`` does ``getattr(logging, level, logging.INFO)``, so 'LOUD'
    silently becomes INFO and 'BASIC_FORMAT' (a string attribute of ``logging``) crashes ``basicConfig``
    with a traceback.
    """
    with pytest.raises(ValueError, match="log_level"):
        parse(["--log-level", raw])


@pytest.mark.parametrize("raw", ["debug", "Info", "WARNING", "error"])
def test_log_level_is_case_insensitive(raw: str) -> None:
    assert parse(["--log-level", raw]).log_level == raw.upper()


def test_settings_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().max_inbox = 5  # type: ignore[misc]


def test_bad_configuration_exits_2_with_a_message_and_nothing_on_stdout(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_BROKER_")}
    env["MCP_BROKER_DB"] = str(tmp_path / "b.db")
    env["MCP_BROKER_MAX_INBOX"] = "-3"
    done = subprocess.run(
        [sys.executable, "-m", "mcp_broker"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == b""
    assert b"max_inbox must be positive" in done.stderr
    assert not (tmp_path / "b.db").exists()


def test_host_id_names_the_machine_of_this_process() -> None:
    from mcp_broker import procs

    assert procs.Identity.current("machine-b").host == "machine-b"
    assert procs.Identity.current(None).host == procs.Identity.current().host != ""
