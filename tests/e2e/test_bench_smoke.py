"""The benchmark cannot rot: a quick run spawns real brokers and writes every figure (timings are never asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

QUICK_FIGURES = [
    "latency.messages",
    *(f"latency.{kind}_{q}_ms" for kind in ("e2e", "wake") for q in ("p50", "p95", "p99")),
    "latency.send_call_p50_ms",
    "latency.ping_p50_ms",
    "latency.ping_p99_ms",
    "throughput.send_per_s",
    "throughput.ping_per_s",
    "throughput.send_per_ping",
    "store.broker_send_per_s",
    "store.sqlite_insert_per_s",
    "store.send_per_sqlite_insert",
    "store.pipeline_msgs_per_s",
    *(f"scale.10.{name}" for name in ("msgs_per_s", "p50_ms", "p99_ms", "errors", "lost", "rss_mb_max")),
    "broadcast.recipients",
    "broadcast.call_ms",
    "broadcast.send_call_ms",
    "broadcast.last_received_ms",
    "broadcast.receive_errors",
    "cost.start_to_initialize_ms",
    "cost.python_start_ms",
    "cost.rss_mb",
    "cost.private_mb",
    "cost.idle_cpu_percent",
    "cost.idle_wait_s",
    "load.agents",
    "load.idle_cores",
    "load.max_rate_p99_under_500ms",
    *(f"load.first_{q}_ms" for q in ("p50", "p95", "p99")),
    "load.first_cpu_ms_per_msg",
    "load.lost",
    "load.duplicates",
    "load.errors",
    "load.store_busy",
]


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_quick_benchmark_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-5000:]}"
    document = json.loads(out.read_text())
    assert document["errors"] == {}
    assert document["machine"]["cores"] >= 1 and document["machine"]["sqlite"]
    figures = document["figures"]
    missing = [name for name in QUICK_FIGURES if name not in figures]
    assert not missing, f"missing figures: {missing}"
    for name in QUICK_FIGURES:
        value = figures[name]["value"]
        assert isinstance(value, int | float) and math.isfinite(value), (name, value)
    # Correctness, not speed: every message sent in the scale run was acked, and no call failed.
    assert figures["scale.10.lost"]["value"] == 0
    assert figures["scale.10.errors"]["value"] == 0
    assert figures["broadcast.recipients"]["value"] >= 1
    # The open-loop load: every offered message delivered once, no call refused.
    for name in ("load.lost", "load.duplicates", "load.errors", "load.store_busy"):
        assert figures[name]["value"] == 0, (name, figures[name])
    for name, figure in figures.items():
        if name in ("throughput.send_per_ping", "cost.rss_mb"):
            assert figure["limit"] is not None, f"{name} should be shown with its target"
    table = done.stdout
    assert "figure" in table and "target" in table and "ratio" in table
