"""The commands for people: ``status``, ``sessions``, ``protocols``, ``inbox``, ``tail``, ``dlq``,
``prune`` and ``send``.

Each reads the store the global ``--store`` / ``MCP_BROKER_STORE`` settings name (as every broker
process of the hosts does), prints a readable table by default and a stable JSON document with
``--json`` (the shapes are in the README). They are not the MCP server, so stdout is theirs. Exit
codes: 0 done, 1 the store refused or a name is unknown, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from .. import config
from ..errors import BrokerError
from ..store import open_engine
from ..store.contract import Event, StoreError
from . import render, tail
from .views import NotFound, Views, event_dict

log = logging.getLogger(__name__)
Command = Callable[[argparse.Namespace, Views], Awaitable[Any]]


class Refused(Exception):
    """A command that cannot do what was asked; the message says why (exit 1)."""


def settings_of(args: argparse.Namespace) -> config.Settings:
    return config.load(args)


@contextlib.asynccontextmanager
async def opened(settings: config.Settings) -> AsyncIterator[Views]:
    """``Views`` over the configured store, with its notifier open (to wake whom a replay concerns)."""
    store, notifier = open_engine(settings)
    await store.open()
    try:
        await notifier.open()
        try:
            yield Views(store, notifier, settings)
        finally:
            await notifier.close()
    finally:
        await store.close()


def _print(args: argparse.Namespace, data: Any, readable: Callable[[Any], Any]) -> None:
    if args.json:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    else:
        render.console().print(readable(data))


def _run(args: argparse.Namespace, command: Command) -> int:
    """Settings, the store, the command, and what went wrong said in one line on stderr."""
    try:
        settings = settings_of(args)
    except ValueError as exc:
        print(f"error: bad configuration: {exc}", file=sys.stderr)
        return 2

    async def main() -> Any:
        async with opened(settings) as views:
            return await command(args, views)

    try:
        anyio.run(main)
    except BaseException as exc:  # task groups wrap what went wrong: look at the leaves
        leaves = _leaves(exc)
        if any(isinstance(leaf, BrokenPipeError) for leaf in leaves):  # `... | head`: the reader is gone
            _quiet_stdout()
            return 0
        for leaf in leaves:
            if isinstance(leaf, StoreError):
                print(f"error: the store {settings.store} cannot be used: {leaf}", file=sys.stderr)
                return 1
            if isinstance(leaf, NotFound | Refused | BrokerError | ValueError | OSError):
                print(f"error: {leaf}", file=sys.stderr)
                return 1
        if all(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            return 130
        raise
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


# --- the commands ------------------------------------------------------------------------------------


async def _history(args: argparse.Namespace, views: Views) -> None:
    data = await views.history(
        args.session,
        peer=args.peer,
        protocol=args.protocol,
        direction=args.direction,
        since=tail.parse_since(args.since, views.clock()) if args.since else None,
        until=tail.parse_since(args.until, views.clock()) if args.until else None,
        limit=args.limit,
        cursor=args.cursor,
    )
    _print(args, data, render.history)


async def _status(args: argparse.Namespace, views: Views) -> None:
    _print(args, await views.status(), render.status)


async def _sessions(args: argparse.Namespace, views: Views) -> None:
    _print(args, await views.sessions(), render.sessions)


async def _protocols(args: argparse.Namespace, views: Views) -> None:
    if args.version is not None:
        if args.name is None:
            raise Refused("--version needs a protocol NAME")
        _print(args, await views.protocol_version(args.name, args.version), render.protocol_version)
    else:
        _print(args, await views.protocols(args.name), render.protocols)


async def _inbox(args: argparse.Namespace, views: Views) -> None:
    _print(args, await views.inbox(args.name, args.limit), render.inbox)


async def _dlq(args: argparse.Namespace, views: Views) -> None:
    if args.action == "list":
        if args.ids:
            raise Refused("dlq list takes no message ids (did you mean replay or purge?)")
        _print(args, await views.dead_letters(args.limit, args.cursor), render.dead_letters)
        return
    if not args.ids:
        raise Refused(f"dlq {args.action} needs at least one message id (`mcp-broker dlq` lists them)")
    if args.action == "replay":
        data = await views.replay(args.ids)
        _print(
            args,
            data,
            lambda d: render.counts("replayed", d["replayed"], "no dead letter of it (or its inbox is full)"),
        )
    else:
        data = await views.purge(args.ids)
        _print(args, data, lambda d: render.counts("purged", d["purged"], "no dead letter of it"))


async def _prune(args: argparse.Namespace, views: Views) -> None:
    _print(args, await views.prune(args.older_than), render.pruned)


async def _tail(args: argparse.Namespace, views: Views) -> None:
    what = tail.Follow(
        session_id=(await views.session(args.session)).id if args.session else None,
        protocol=args.protocol,
        since=tail.parse_since(args.since, views.clock()) if args.since else None,
    )

    def emit(event: Event) -> None:
        text = json.dumps(event_dict(event), ensure_ascii=False) if args.json else tail.line(event)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    notifier = views.notifier
    assert notifier is not None  # ``opened`` always gives one
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    tg.cancel_scope.cancel()

            def ready() -> None:
                print(f"following {views.store.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)

            async def follow() -> None:
                await tail.follow(views.store, notifier, what, emit, ready=ready)

            tg.start_soon(stop_on_signal)
            tg.start_soon(follow)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail on a closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


async def _send(args: argparse.Namespace, views: Views) -> None:
    from .sender import send_as

    payload = _payload(args.payload)
    result = await send_as(
        views.settings,
        args.sender,
        args.to,
        args.protocol,
        payload,
        version=args.protocol_version,
        priority=args.priority,
        ttl_seconds=args.ttl,
        correlation_id=args.correlation_id,
        idempotency_key=args.idempotency_key,
    )
    _print(
        args, result, lambda r: render.Text(f"{r['status']}: {r['message_id']} to {args.to} as {args.sender}")
    )


def _payload(text: str) -> Any:
    """PAYLOAD is JSON text, ``@file`` for a file of JSON, or ``-`` for JSON on stdin."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Refused(f'PAYLOAD is not JSON ({exc}); quote it: \'{{"text": "hi"}}\'') from exc


# --- the parser ------------------------------------------------------------------------------------


def _add(subparsers: Any, name: str, help_text: str, command: Command) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text, description=help_text)
    config.add_arguments(sub, subcommand=True)
    sub.add_argument("--json", action="store_true", help="print JSON (the shapes are in the README)")
    sub.set_defaults(run=lambda args: _run(args, command))
    return sub


def add_subcommands(subparsers: Any) -> None:
    """Register the people commands; each sets ``args.run`` (the parsed arguments -> an exit code)."""
    _add(subparsers, "status", "the store at a glance: sessions, waiting messages, dead letters", _status)
    _add(subparsers, "sessions", "every session with its status, queue depth, host and process", _sessions)
    protocols = _add(
        subparsers, "protocols", "registered protocols: versions, capabilities, adapters", _protocols
    )
    protocols.add_argument("name", nargs="?", help="one protocol")
    protocols.add_argument("--version", dest="version", help="show this version's schema (needs NAME)")
    inbox = _add(subparsers, "inbox", "peek at what waits for a session (nothing is leased)", _inbox)
    inbox.add_argument("name", help="the session's name")
    inbox.add_argument("--limit", type=int, default=50, help="at most this many messages (default 50)")
    follow = _add(subparsers, "tail", "follow traffic as it happens, across every process", _tail)
    follow.add_argument("--session", help="only messages this session sent or received")
    follow.add_argument("--protocol", help="only messages of this protocol")
    follow.add_argument("--since", help="start this far back: 10m, 2h, 1d, or an ISO 8601 time")
    dlq = _add(subparsers, "dlq", "dead letters of every session: list, replay or purge them", _dlq)
    dlq.add_argument("action", nargs="?", choices=("list", "replay", "purge"), default="list")
    dlq.add_argument("ids", nargs="*", metavar="ID", help="message ids, for replay and purge")
    dlq.add_argument("--limit", type=int, default=50, help="list: at most this many (default 50)")
    dlq.add_argument("--cursor", help="list: the next page, as the previous one said")
    prune = _add(
        subparsers, "prune", "delete what retention no longer keeps (brokers also do it hourly)", _prune
    )
    prune.add_argument(
        "--older-than",
        type=float,
        help="days, for messages and sessions alike (default: history_retention_days and retention_days)",
    )
    past = _add(subparsers, "history", "messages sent and received, kept by history_retention_days", _history)
    past.add_argument(
        "--session", help="one session's sent and received messages (default: every session's sends)"
    )
    past.add_argument("--peer", help="only messages to or from this session")
    past.add_argument("--protocol", help="only messages of this protocol")
    past.add_argument("--direction", choices=("sent", "received"), help="with --session: one way only")
    past.add_argument("--since", help="from this far back: 10m, 2h, 1d, or an ISO 8601 time")
    past.add_argument("--until", help="up to this far back, as --since")
    past.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    past.add_argument("--cursor", help="with --session: the next page, as the previous one said")
    send = _add(subparsers, "send", "send a message from a shell, as a session of your own", _send)
    send.add_argument("--as", dest="sender", required=True, help="your session's name, e.g. `me`")
    send.add_argument("to", help="the recipient's session name or id")
    send.add_argument("protocol", help="the protocol, e.g. chat")
    send.add_argument("payload", help="JSON text, @file, or - for stdin")
    send.add_argument("--protocol-version", help="the version to send (default: as send picks it)")
    send.add_argument("--priority", choices=("low", "normal", "high"), default="normal")
    send.add_argument("--ttl", type=float, help="seconds before it expires undelivered")
    send.add_argument("--correlation-id")
    send.add_argument("--idempotency-key", help="the same key within 24 h sends once")
