"""Figures, their targets (issues 4 and 14), the machine header, the printed table and the JSON file."""

from __future__ import annotations

import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from .procfs import cpu_model

# figure -> (comparison, limit). Figures without an entry are shown for context (a baseline, a count).
TARGETS: dict[str, tuple[str, float]] = {
    "latency.e2e_p50_ms": ("<=", 5),
    "latency.e2e_p99_ms": ("<=", 20),
    "latency.wake_p50_ms": ("<=", 1),
    "latency.wake_p99_ms": ("<=", 10),
    "throughput.send_per_ping": (">=", 0.5),
    "store.send_per_sqlite_insert": (">=", 0.2),
    "store.pipeline_msgs_per_s": (">=", 5000),
    "broadcast.call_ms": ("<=", 250),
    "broadcast.receive_errors": ("==", 0),
    "cost.start_to_initialize_ms": ("<=", 1000),
    "cost.idle_cpu_percent": ("<=", 1),
    "cost.rss_mb": ("<=", 80),
    # issue 14: an open-loop load across 50 processes
    "load.plan_p50_ms": ("<=", 50),
    "load.plan_p95_ms": ("<=", 100),
    "load.plan_p99_ms": ("<=", 500),
    "load.plan_cpu_ms_per_msg": ("<=", 4),
    "load.plan_lost": ("==", 0),
    "load.max_rate_p99_under_500ms": (">=", 400),
    "load.idle_cores": ("<=", 0.02),
    "load.lost": ("==", 0),
    "load.errors": ("==", 0),
    "load.store_busy": ("==", 0),
}
for _n in (10, 50, 100):
    TARGETS[f"scale.{_n}.errors"] = ("==", 0)
    TARGETS[f"scale.{_n}.lost"] = ("==", 0)


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    note: str = ""
    comparison: str | None = None
    limit: float | None = None
    ratio: float | None = None  # value / limit
    passed: bool | None = None

    @classmethod
    def make(cls, name: str, value: float, unit: str, note: str = "") -> Figure:
        figure = cls(name, value, unit, note)
        if name in TARGETS:
            figure.comparison, figure.limit = TARGETS[name]
            if figure.limit:
                figure.ratio = value / figure.limit
            figure.passed = {
                "<=": value <= figure.limit,
                ">=": value >= figure.limit,
                "==": value == figure.limit,
            }[figure.comparison]
        return figure


def machine() -> dict[str, Any]:
    """What the figures were taken on."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 0

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "?"

    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cores": affinity,
        "cpu": cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "mcp_broker": version("mcp-broker"),
        "fastmcp": version("fastmcp"),
        "mcp": version("mcp"),
        "commit": commit or "?",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def header(info: dict[str, Any], argv: list[str]) -> str:
    return (
        f"mcp-broker benchmark: {info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB, {info['os']}\n"
        f"Python {info['python']}, SQLite {info['sqlite']}, mcp-broker {info['mcp_broker']} ({info['commit']}), "
        f"fastmcp {info['fastmcp']}, mcp {info['mcp']}\n"
        f"load average at start {info['load_average']}; command: python -m bench {' '.join(argv)}"
    )


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (math.isfinite(value) and value == int(value) and abs(value) >= 100):
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def table(figures: list[Figure]) -> str:
    rows = [("figure", "value", "target", "ratio", "result")]
    for f in figures:
        value = f"{_number(f.value)} {f.unit}".rstrip()
        target = f"{f.comparison} {_number(f.limit)} {f.unit}".rstrip() if f.limit is not None else ""
        ratio = f"{f.ratio:.2f}" if f.ratio is not None else ""
        result = "" if f.passed is None else ("pass" if f.passed else "FAIL")
        rows.append((f.name, value, target, ratio, result))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for n, r in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(w) if i in (0, 4) else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def notes(figures: list[Figure]) -> str:
    return "\n".join(f"  {f.name}: {f.note}" for f in figures if f.note)


def _plain(value: Any) -> Any:
    """JSON has no NaN or infinity: a figure that could not be measured is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_json(
    path: Path,
    info: dict[str, Any],
    argv: list[str],
    figures: list[Figure],
    details: dict[str, Any],
    errors: dict[str, str],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": info,
        "command": ["python", "-m", "bench", *argv],
        "executable": sys.executable,
        "figures": {f.name: {k: v for k, v in asdict(f).items() if k != "name"} for f in figures},
        "details": details,
        "errors": errors,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_plain(document), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
