"""5. Broadcast from one session to many (1,000; 100 with --quick).

The sender is a real broker process over stdio calling the ``broadcast`` tool. The recipients are
sessions of the domain layer's ``Broker`` (one store connection and one doorbell each) held by a
few helper processes (``bench.fleet``, 100 sessions each), because 1,000 broker processes would
need ~90 GB of memory. Measured:

* the broadcast call, request leaving -> answer arriving, with the recipients idle; beside it one
  point-to-point ``send`` on the same connection (the baseline). Broadcast is one transaction that
  commits before the answer, so every recipient *could* receive the message when the answer arrives;
* with every recipient parked in ``receive(wait_seconds=30)``, from the request leaving until the
  last recipient's receive has returned the message (stamps from CLOCK_MONOTONIC, which
  ``time.perf_counter`` reads in every process), and how many receives failed instead.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from .client import broker_env
from .common import PROTOCOL, Progress, Run, payload, session, summary_ms

PER_FLEET = 100


class Fleet:
    """One ``python -m bench.fleet`` helper and its line-per-command conversation."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    @classmethod
    async def spawn(cls, db: Path, first: int, count: int) -> Fleet:
        log_path = db.parent / f"fleet-{first}.log"
        with open(log_path, "ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.fleet",
                str(db),
                str(first),
                str(count),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=broker_env(db),
                cwd=Path(__file__).resolve().parent.parent,
                limit=16 * 1024 * 1024,
            )
        fleet = cls(proc, log_path)
        await fleet.answer("ready", timeout=300)
        return fleet

    async def answer(self, key: str, timeout: float = 120) -> Any:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"fleet helper pid {self.proc.pid} exited: {' | '.join(tail)}")
            message = json.loads(line)
            if "error" in message:
                raise RuntimeError(f"fleet helper: {message['error']}")
            if key in message:
                return message

    def command(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")

    async def close(self) -> None:
        if self.proc.returncode is None:
            try:
                self.command("exit")
                await asyncio.wait_for(self.proc.wait(), 120)
            except (OSError, TimeoutError):
                self.proc.kill()
                await self.proc.wait()


async def run_broadcast(run: Run) -> None:
    progress = Progress("broadcast")
    size = 100 if run.quick else 1000
    per_fleet = 50 if run.quick else PER_FLEET
    rounds = 1 if run.quick else 3
    db = run.db("broadcast")
    caster = await run.spawn(db, "caster")
    await session(caster, "caster", register=True)

    progress(f"starting {size // per_fleet} helper processes holding {per_fleet} recipient sessions each")
    fleets: list[Fleet] = []
    try:
        spawned = await asyncio.gather(
            *(Fleet.spawn(db, first, per_fleet) for first in range(0, size, per_fleet)),
            return_exceptions=True,
        )
        fleets = [f for f in spawned if isinstance(f, Fleet)]
        for failure in spawned:
            if isinstance(failure, BaseException):
                raise failure

        args = {"protocol": PROTOCOL, "payload": payload(0)}
        sends, calls = [], []
        for n in range(5):
            stamp: list[float] = []
            _, arrived = await caster.call(
                "send", {"to": "bc-0", "protocol": PROTOCOL, "payload": payload(n)}, sent=stamp
            )
            sends.append(arrived - stamp[0])
        for _ in range(rounds):
            stamp = []
            result, arrived = await caster.call("broadcast", args, sent=stamp)
            calls.append(arrived - stamp[0])
            if result["recipient_count"] != size:
                raise RuntimeError(f"broadcast reached {result['recipient_count']} of {size} sessions")
        progress(f"broadcast call {statistics.median(calls) * 1000:.0f} ms (median of {rounds}); draining")
        for fleet in fleets:
            fleet.command("drain")
        await asyncio.gather(*(f.answer("drained") for f in fleets))

        progress(f"parking {size} receivers in receive(wait_seconds=30)")
        for fleet in fleets:
            fleet.command("park")
        parked = sum(m["parked"] for m in await asyncio.gather(*(f.answer("parked") for f in fleets)))
        if parked != size:
            raise RuntimeError(f"only {parked} of {size} receivers were parked")
        stamp = []
        _, arrived = await caster.call("broadcast", args, sent=stamp)
        outcomes = await asyncio.gather(*(f.answer("received") for f in fleets))
        parked_call = arrived - stamp[0]
        received_at = [t - stamp[0] for o in outcomes for t in o["received"]]
        receive_errors = sum(o["error_count"] for o in outcomes)
        error_samples = [e for o in outcomes for e in o["errors"]][:5]
        spread = summary_ms(received_at)
    finally:
        progress("closing the sessions")
        await asyncio.gather(*(f.close() for f in fleets))
        await run.close(caster)

    run.details["broadcast"] = {
        "recipients": size,
        "helper_processes": len(fleets),
        "call_ms_each": [c * 1000 for c in calls],
        "send_call_ms_each": [s * 1000 for s in sends],
        "parked_call_ms": parked_call * 1000,
        "received_after_ms": spread,
        "receive_errors": receive_errors,
        "receive_error_samples": error_samples,
    }
    run.figure(
        "broadcast.recipients",
        size,
        "sessions",
        f"domain-layer sessions in {len(fleets)} helper processes, not one process each",
    )
    run.figure(
        "broadcast.call_ms",
        statistics.median(calls) * 1000,
        "ms",
        f"median of {rounds}, recipients idle; all could receive it when the answer came (one transaction)",
    )
    run.figure(
        "broadcast.send_call_ms", statistics.median(sends) * 1000, "ms", "baseline: one point-to-point send"
    )
    run.figure(
        "broadcast.last_received_ms",
        spread["max"] if received_at else float("nan"),
        "ms",
        f"request leaving -> last of {len(received_at)} parked receivers has it (p50 {spread['p50']:.0f} ms)",
    )
    run.figure(
        "broadcast.receive_errors",
        receive_errors,
        "",
        "; ".join(error_samples)[:300],
    )
