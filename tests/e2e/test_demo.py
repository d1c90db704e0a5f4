"""End to end: ``mcp-broker demo`` spawns real broker processes and prints their conversation."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(200)]


def run_demo(tmp_path: Path, *flags: str, keep: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -m mcp_broker [flags] demo [--keep]`` with a private home, so a demo that strayed to the
    per-user default database would leave a trace there."""
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / ".local" / "share")}
    return subprocess.run(
        [sys.executable, "-m", "mcp_broker", *flags, "demo", *(["--keep"] if keep else [])],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_demo_prints_a_real_conversation_and_cleans_up(tmp_path: Path) -> None:
    done = run_demo(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    expected = [
        r"^\[author\] register_protocol review 1\.0\.0  -> registered$",
        r"^\[reviewer\] connect .* -> session \w{8} \(new\)$",
        r"^\[author\] negotiate with reviewer  -> compatible=True  agreed: review 1\.0\.0 ",
        r'^\[author\] -> reviewer  review 1\.0\.0  \{"file": "app\.py"\}  \(delivered\)$',
        r"^\[reviewer\] <- author  review 1\.0\.0 .* attempt 1  \(long-poll answered [\d.]+ ms after the send "
        r"left; the send's own answer took [\d.]+ ms\)$",
        r"^\[reviewer\] ack 1 message\(s\)$",
        r"\(idempotency_key r-1 seen: first answer again, nothing new stored\)$",
        r"^\[reviewer\] -> author  review .* refused: PAYLOAD_INVALID: ",
        r"^\[ci\] broadcast build 1\.0\.0 .* 1 recipient\(s\): author \(delivered\); "
        r"skipped: reviewer \(does not speak build\)$",
        r'^\[author\] -> reviewer  review 1\.0\.0  \{"file": "db\.py"\}  \(queued\)$',
        r"^\[author\] list_sessions  -> .*reviewer disconnected",
        r"^\[reviewer\] connect .* \(resumed, 1 waiting\)$",
        r'^\[reviewer\] <- author  review 1\.0\.0  \{"file": "db\.py"\}  attempt 1$',
        r"^# done in ",
    ]
    for pattern in expected:
        assert re.search(pattern, out, re.MULTILINE), f"missing {pattern!r} in:\n{out}"
    # The long-poll is woken by the other process's send, not by its own timeout.
    woke = float(re.search(r"long-poll answered ([\d.]+) ms", out).group(1))  # type: ignore[union-attr]
    assert woke < 2000, out

    db = Path(re.search(r"^# mcp-broker demo: database (.+)$", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert not db.parent.exists(), "the demo's temporary directory was not removed"
    assert not (tmp_path / "home").exists(), "the demo touched the per-user default database"


def test_demo_uses_the_database_named_by_db_and_keep_keeps_its_log(tmp_path: Path) -> None:
    db = tmp_path / "mine" / "broker.db"
    done = run_demo(tmp_path, "--db", str(db), keep=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"# mcp-broker demo: database {db}\n" in done.stdout
    assert db.exists(), "--db was not used"
    kept = re.search(r"^# kept: database (\S+), broker log (\S+)$", done.stdout, re.MULTILINE)
    assert kept, done.stdout
    log = Path(kept.group(2))
    assert log.exists()
    shutil.rmtree(log.parent)
    assert not (tmp_path / "home").exists()
