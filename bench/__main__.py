"""``python -m bench``: run the benchmark, print the table, write the figures as JSON."""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from . import redis_target, report
from .broadcast import run_broadcast
from .common import Run
from .cost import run_cost
from .latency import run_latency
from .load import run_load
from .profiles import run_profiles
from .redis_target import RedisTarget
from .scale import run_scale
from .store import run_store
from .throughput import run_throughput

SECTIONS: dict[str, Callable[[Run], Awaitable[None]]] = {
    "latency": run_latency,
    "throughput": run_throughput,
    "store": run_store,
    "scale": run_scale,
    "broadcast": run_broadcast,
    "cost": run_cost,
    "profiles": run_profiles,
    "load": run_load,
}
SQLITE_ONLY = ("store",)  # sections that measure the SQLite engine in-process, not the brokers
DEFAULT_OUT = Path(__file__).parent / "results" / "latest.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark mcp-broker: real broker processes over stdio, each figure beside its baseline and target.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run with small counts (about 30 s: it still starts some 20 broker processes)",
    )
    parser.add_argument(
        "--only", metavar="NAME[,NAME]", help=f"run only these sections: {', '.join(SECTIONS)}", default=None
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=None,
        metavar="N",
        help="messages for latency and throughput (default 1000, --quick 50); the store section uses more",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON file to write (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch folder (databases, broker logs)"
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help="run the sections on this Redis store (redis://..., unix://...) instead of SQLite files",
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help="start a redis-server of the run's own (AOF, everysec) under the scratch folder and use it",
    )
    parser.add_argument(
        "--fail-on-miss",
        action="store_true",
        help="exit 3 when a figure misses its target (default: report only)",
    )
    return parser


def _raise_fd_limit() -> None:
    """1,000 in-process sessions hold ~5,000 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16384 if hard == resource.RLIM_INFINITY else min(hard, 16384)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def _run(run: Run, names: list[str], errors: dict[str, str], target: RedisTarget | None) -> None:
    try:
        for name in names:
            started = time.perf_counter()
            server_cpu = target.cpu_seconds() if target is not None else None
            try:
                if target is not None and name in SQLITE_ONLY:
                    print(f"{name}: skipped on Redis (it measures SQLite itself)", file=sys.stderr)
                    continue
                await SECTIONS[name](run)
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
                print(f"{name}: FAILED ({errors[name]})", file=sys.stderr, flush=True)
            finally:
                await run.close()  # whatever a failed section left running
            run.details.setdefault("section_seconds", {})[name] = round(time.perf_counter() - started, 1)
            if server_cpu is not None and target is not None and name not in SQLITE_ONLY:
                used = (target.cpu_seconds() or server_cpu) - server_cpu
                run.figure(
                    f"{name}.redis_server_cpu_s", used, "s", "the redis-server's own CPU in the section"
                )
    finally:
        await run.close()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    names = list(SECTIONS) if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        _parser().error(f"unknown section {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    messages = args.messages if args.messages is not None else (50 if args.quick else 1000)
    if messages < 1:
        _parser().error("--messages must be at least 1")
    _raise_fd_limit()

    info = report.machine()
    print(report.header(info, argv), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="mcp-broker-bench-"))
    target = None
    if args.redis:
        target = redis_target.start(workdir / "redis")
    elif args.store is not None:
        target = redis_target.attach(args.store)
    run = Run(quick=args.quick, messages=messages, workdir=workdir, store=target and target.url)
    errors: dict[str, str] = {}
    started = time.perf_counter()
    try:
        asyncio.run(_run(run, names, errors, target))
    except KeyboardInterrupt:
        errors["interrupted"] = "KeyboardInterrupt"
    finally:
        if target is not None:
            target.stop()
        if args.keep:
            print(f"scratch folder kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    run.details["total_seconds"] = round(time.perf_counter() - started, 1)
    run.details["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]

    print()
    print(report.table(run.figures))
    if notes := report.notes(run.figures):
        print("\nnotes:\n" + notes)
    print("\nratio = value / target; latencies use one clock (time.perf_counter) in the benchmark process.")
    for name, error in errors.items():
        print(f"section {name} FAILED: {error}")
    report.write_json(args.out, info, argv, run.figures, run.details, errors)
    print(f"figures written to {args.out} ({run.details['total_seconds']} s)")
    if errors:
        return 1
    if args.fail_on_miss and any(f.passed is False for f in run.figures):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
