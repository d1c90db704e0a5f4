"""Command line: ``mcp-broker [serve]`` runs the stdio MCP server; ``mcp-broker demo`` shows agents talking.

Logging goes to stderr before anything else happens: stdout belongs to JSON-RPC alone.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from collections.abc import Sequence

import anyio

from . import __version__, config
from .errors import BrokerError
from .store import check_store_url


def _setup_logging(level: str) -> None:
    import fastmcp  # configures its own rich handler on import; route it through ours instead

    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        force=True,
    )
    fastmcp_logger = logging.getLogger(fastmcp.__name__)
    for handler in fastmcp_logger.handlers[:]:
        fastmcp_logger.removeHandler(handler)
    fastmcp_logger.propagate = True
    fastmcp_logger.setLevel(logging.NOTSET)


def build_parser(*, commands: bool = True, exit_on_error: bool = True) -> argparse.ArgumentParser:
    """The whole command line; without ``commands``, only serving and the demo (see ``needs_commands``)."""
    parser = argparse.ArgumentParser(
        prog="mcp-broker",
        description="A message broker for AI agents that speak MCP. Every setting also reads MCP_BROKER_<NAME>.",
        exit_on_error=exit_on_error,
    )
    parser.add_argument("--version", action="version", version=f"mcp-broker {__version__}")
    config.add_arguments(parser)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve MCP over stdio (the default)")
    config.add_arguments(serve, subcommand=True)
    demo = sub.add_parser("demo", help="spawn broker processes as three agents and print their conversation")
    config.add_arguments(demo, subcommand=True)
    demo.add_argument("--keep", action="store_true", help="keep the demo's database instead of deleting it")
    if not commands:
        return parser
    from .dashboard import cli as dashboard_cli
    from .ops import cli as ops_cli
    from .ops import people, reader

    ops_cli.add_subcommands(sub, open_inbox=reader.opened, read_sessions=reader.read_sessions)
    people.add_subcommands(sub)
    dashboard_cli.add_subcommands(sub)
    return parser


async def _serve(settings: config.Settings) -> None:
    from .domain import Broker
    from .mcp import build_server
    from .mcp.transport import serve_stdio

    async with Broker.running(settings) as broker, anyio.create_task_group() as tg:

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    logging.getLogger(__name__).info("signal %s: shutting down", signum)
                    tg.cancel_scope.cancel()

        async def serve() -> None:
            logging.getLogger(__name__).info("mcp-broker %s serving %s", __version__, settings.store)
            server = build_server(broker)
            # What start-up built (modules, schemas, the server) lives as long as the process: out of
            # the collector's sight, a full collection no longer walks ~120,000 objects (about 30 ms
            # here) while a call waits.
            gc.freeze()
            await serve_stdio(server, after_first_answer=_load_the_rest)
            tg.cancel_scope.cancel()  # stdin closed: a clean exit

        tg.start_soon(stop_on_signal)
        tg.start_soon(serve)


def needs_commands(argv: Sequence[str]) -> bool:
    """Whether ``argv`` names more than serving or the demo. The people commands' parsers import the
    dashboard, doctor and rich (about 0.1 s and several MB): a host spawning the server skips them."""
    if "-h" in argv or "--help" in argv:
        return True
    try:
        _, extras = build_parser(commands=False, exit_on_error=False).parse_known_args(argv)
    except argparse.ArgumentError:
        return True  # a command (or a mistake) the whole parser names, or refuses, properly
    return bool(extras)


def _load_the_rest() -> None:
    """Import, on a thread, what serving deferred past the first answer (the JSON Schema engine), so
    the first send does not wait for it."""
    import importlib
    import threading

    threading.Thread(
        target=importlib.import_module,
        args=("mcp_broker.validation",),
        name="mcp-broker-imports",
        daemon=True,
    ).start()


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(commands=needs_commands(argv)).parse_args(argv)
    if getattr(args, "run", None) is not None:  # install, uninstall, doctor, hook: quick, no server
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
        sys.exit(args.run(args))
    _setup_logging("INFO")
    try:
        settings = config.load(args)
        check_store_url(settings.store)
    except ValueError as exc:
        logging.getLogger(__name__).error("bad configuration: %s", exc)
        sys.exit(2)
    _setup_logging(settings.log_level)
    if getattr(args, "run_with_settings", None) is not None:  # dashboard, metrics: they read the store
        sys.exit(args.run_with_settings(args, settings))
    if args.command == "demo":
        from .demo import run_demo

        sys.exit(anyio.run(run_demo, settings, args.keep))
    try:
        anyio.run(_serve, settings)
    except* BrokerError as group:  # e.g. the database cannot be opened: say so, exit non-zero
        for error in _leaves(group):  # a refusal inside the server's task groups comes nested
            logging.getLogger(__name__).error("%s", error)
        sys.exit(1)


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for sub in error.exceptions for leaf in _leaves(sub)]
    return [error]
