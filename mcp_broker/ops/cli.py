"""The host-wiring subcommands: ``install``, ``uninstall``, ``doctor`` and ``hook``.

:func:`add_subcommands` registers them on the main parser; each sets ``args.run``, a function of the parsed
arguments that returns the exit code, so the caller dispatches with ``sys.exit(args.run(args))``. Store access
is handed in (``open_inbox`` for the hooks, ``read_sessions`` for doctor's store checks): this module never
opens a store itself. ``python -m mcp_broker.ops.cli`` runs the same commands on their own.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from . import doctor, hooks, hosts

SessionReader = Callable[[str | None], Awaitable[list[doctor.SessionRecord]]]


def _store(args: argparse.Namespace) -> str | None:
    """The store named after the command or before it (``mcp-broker --store X hook ...``); None: as
    the environment configures it. The subcommand's flag does not default, so it never hides the other."""
    return getattr(args, "store", None)


def _place(args: argparse.Namespace) -> hosts.Place:
    project = None
    if getattr(args, "scope", "user") == "project":
        project = Path(args.project or ".").absolute()
    return hosts.Place.here(project)


def _plans(args: argparse.Namespace, install: bool) -> list[hosts.Change]:
    place = _place(args)
    if install:
        changes = [hosts.plan_install(args.host, place, store=_store(args))]
        if args.hooks:
            groups = hooks.settings_groups(hosts.launcher(), store=_store(args), wait=args.wait)
            changes.append(hosts.plan_hooks(place, dict(groups)))
        return changes
    changes = [hosts.plan_uninstall(args.host, place)]
    if args.host == "claude-code":
        changes.append(hosts.plan_hooks(place, dict.fromkeys(hooks.EVENTS)))
    return changes


def _edit(args: argparse.Namespace, install: bool) -> int:
    if install and args.hooks and args.host != "claude-code":
        print("--hooks is for claude-code only", file=sys.stderr)
        return 2
    for attempt in (1, 2):
        try:
            changes = _plans(args, install)
            for change in changes:
                _report(change, args.dry_run)
            return 0
        except hosts.Conflict as exc:
            if attempt == 2:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        except (ValueError, RuntimeError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 1


def _report(change: hosts.Change, dry_run: bool) -> None:
    if not change.changed:
        print(f"{change.path}: nothing to change ({change.what}: already so)")
        return
    if dry_run:
        print(f"would {change.what}:")
        print(change.diff(), end="")
        return
    backup = hosts.apply(change)
    saved = f"; the previous version is in {backup}" if backup else " (a new file)"
    print(f"{change.what}: wrote {change.path}{saved}")


def _install(args: argparse.Namespace) -> int:
    code = _edit(args, install=True)
    if code == 0 and not args.dry_run:
        print(f"restart {hosts.TITLES[args.host]} to load the change; `mcp-broker doctor` checks it")
    return code


def _uninstall(args: argparse.Namespace) -> int:
    return _edit(args, install=False)


def _doctor(args: argparse.Namespace, read_sessions: SessionReader | None) -> int:
    import socket
    from datetime import UTC, datetime

    place = hosts.Place.here(Path(args.project).absolute() if args.project else Path.cwd())
    findings = doctor.check_configs(place)
    if read_sessions is not None:
        import anyio

        try:
            records = anyio.run(read_sessions, _store(args))
            findings += doctor.check_sessions(records, now=datetime.now(UTC), host=socket.gethostname())
        except Exception as exc:  # a store that cannot be read is itself a finding
            findings.append(doctor.Finding("error", "store", f"cannot read the sessions: {exc}"))
    if args.json:
        print(
            json.dumps(
                {"findings": [f.as_dict() for f in findings], "ok": not doctor.failed(findings)}, indent=2
            )
        )
    else:
        print(doctor.render(findings), end="")
    return 1 if doctor.failed(findings) else 0


def _hook(args: argparse.Namespace, open_inbox: hooks.InboxOpener | None) -> int:
    result = hooks.run(args.event, sys.stdin.read(), open_inbox, _store(args), hooks.Context.here(args.wait))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    sys.stdout.flush()
    return result.exit_code


def add_subcommands(
    subparsers: Any,
    *,
    open_inbox: hooks.InboxOpener | None = None,
    read_sessions: SessionReader | None = None,
) -> None:
    """Register ``install``, ``uninstall``, ``doctor`` and ``hook``; each sets ``args.run``."""
    for name, install in (("install", True), ("uninstall", False)):
        verb = "add this installation to" if install else "remove mcp-broker (and its hooks) from"
        sub = subparsers.add_parser(name, help=f"{verb} a host's MCP configuration")
        sub.add_argument("host", choices=hosts.HOSTS)
        sub.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
        sub.add_argument(
            "--scope",
            choices=("user", "project"),
            default="user",
            help="claude-code: ~/.claude.json (user) or .mcp.json in --project (project)",
        )
        sub.add_argument("--project", help="the project directory for --scope project (default: here)")
        if install:
            sub.add_argument(
                "--store",
                default=argparse.SUPPRESS,
                help="store URL for the entry's MCP_BROKER_STORE (default: as configured)",
            )
            sub.add_argument(
                "--hooks", action="store_true", help="claude-code: also add the hooks that wake agents"
            )
            sub.add_argument("--wait", type=float, default=hooks.STOP_WAIT_SECONDS, help=argparse.SUPPRESS)
            sub.set_defaults(run=_install)
        else:
            sub.set_defaults(run=_uninstall)
    check = subparsers.add_parser("doctor", help="check the hosts' entries, the store they share, file modes")
    check.add_argument("--json", action="store_true", help="print the findings as JSON")
    check.add_argument("--project", help="also check this directory's .mcp.json (default: here)")
    check.add_argument(
        "--store", default=argparse.SUPPRESS, help="the store to read sessions from (default: as configured)"
    )
    check.set_defaults(run=lambda args: _doctor(args, read_sessions))
    hook = subparsers.add_parser("hook", help="run as a host's hook command (reads the hook's JSON on stdin)")
    hook.add_argument("host", choices=("claude-code",))
    hook.add_argument("event", help="the hook event: SessionStart, UserPromptSubmit or Stop")
    hook.add_argument("--store", default=argparse.SUPPRESS, help="store URL (default: as configured)")
    hook.add_argument("--wait", type=float, default=hooks.STOP_WAIT_SECONDS, help="Stop: seconds to wait")
    hook.set_defaults(run=lambda args: _hook(args, open_inbox))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mcp-broker")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
