"""Stdio transport that answers every line, even ones the MCP library cannot parse.

The SDK's ``stdio_server`` hands unparseable lines (not JSON, or nested deeper
than pydantic-core allows) to the server loop as exceptions, which it only
logs: the client waits forever. This transport answers them with JSON-RPC
errors and otherwise serves like ``FastMCP.run_stdio_async(show_banner=False)``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
import fastmcp
import mcp_types as types
from anyio.from_thread import BlockingPortal
from anyio.streams.memory import MemoryObjectSendStream
from fastmcp.server.context import reset_transport, set_transport
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from .sdk import ContextSendStream, context_streams, lifespan, low_level

logger = logging.getLogger("mcp_broker.transport")

_DISCARD_CHUNK = 64 * 1024
_READ_CHUNK = 256 * 1024
_INLINE_PARSE_BYTES = 64 * 1024  # longer lines are parsed on a worker thread
_EOF_GRACE_SECONDS = 2.0
_BAD_ID = "Invalid Request: the id must be a string or an integer"
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # unrolled loop: linear, no backtracking
_INT = re.compile(rb"-?(?:0|[1-9][0-9]*)")
_WS = re.compile(rb"[ \t\r\n]*")
_STRUCTURAL = re.compile(rb'"|[{\[]+|[}\]]+')  # whole runs of brackets per step, not one char
_SCALAR_END = re.compile(rb"[,}\]\s]|\Z")


def _skip_ws(data: bytes, i: int) -> int:
    return _WS.match(data, i).end()  # type: ignore[union-attr]  # `*` always matches


def _skip_value(data: bytes, i: int) -> int:
    """Index just past the JSON value at ``i`` (-1 if cut off), by counting depth, never recursing."""
    if data[i : i + 1] == b'"':
        m = _STRING.match(data, i)
        return m.end() if m else -1
    if data[i : i + 1] not in (b"{", b"["):
        return _SCALAR_END.search(data, i).start()  # type: ignore[union-attr]  # \Z always matches
    depth = 0
    while m := _STRUCTURAL.search(data, i):
        run = m.group()
        if run == b'"':
            s = _STRING.match(data, m.start())
            if s is None:
                return -1
            i = s.end()
        elif run[0] in b"{[":
            depth += len(run)
            i = m.end()
        elif depth <= len(run):
            return m.start() + depth
        else:
            depth -= len(run)
            i = m.end()
    return -1


def scan_envelope(data: bytes) -> tuple[str | int | None, set[str], bool]:
    """Read the top-level keys of a possibly invalid or truncated JSON object, iteratively.

    Returns ``(id, keys, complete)``: the top-level "id" if it is a string or an
    integer (else ``None``), the top-level keys seen, and whether the whole
    object was scanned (so a key absent from ``keys`` is truly absent).
    """
    request_id: str | int | None = None
    keys: set[str] = set()
    i = _skip_ws(data, 0)
    if data[i : i + 1] != b"{":
        return None, keys, False
    i = _skip_ws(data, i + 1)
    while i < len(data):
        if data[i : i + 1] == b"}":
            return request_id, keys, True
        key_match = _STRING.match(data, i)
        if key_match is None:
            break
        try:
            key = json.loads(key_match.group())  # a lone string literal: no recursion possible
        except ValueError:
            break
        i = _skip_ws(data, key_match.end())
        if data[i : i + 1] != b":":
            break
        i = _skip_ws(data, i + 1)
        end = _skip_value(data, i)
        if end < 0:
            break
        keys.add(key)
        if key == "id" and (_STRING.fullmatch(data, i, end) or _INT.fullmatch(data, i, end)):
            try:
                request_id = json.loads(data[i:end])
            except ValueError:
                request_id = None
        i = _skip_ws(data, end)
        if data[i : i + 1] == b",":
            i = _skip_ws(data, i + 1)
    return request_id, keys, False


def _error(request_id: str | int | None, code: int, message: str) -> SessionMessage:
    error = types.ErrorData(code=code, message=message)
    return SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error))


def _reply_for_bad_line(line: bytes, exc: Exception | None) -> SessionMessage | None:
    """The error response for a rejected line (``exc is None``: too large), or ``None`` for silence."""
    request_id, keys, complete = scan_envelope(line)
    if complete and "id" not in keys and keys & {"method", "result", "error"}:
        # JSON-RPC forbids answering notifications and responses; all we can do is log.
        logger.warning("dropping unparseable id-less message (%d bytes): %s", len(line), exc)
        return None
    if exc is None:
        return _error(request_id, types.INVALID_REQUEST, "Invalid Request: request too large")
    errors = exc.errors() if isinstance(exc, ValidationError) else []
    if errors and errors[0]["type"] == "json_invalid":
        return _error(request_id, types.PARSE_ERROR, f"Parse error: {errors[0]['msg']}")
    return _error(request_id, types.INVALID_REQUEST, "Invalid Request: not a valid JSON-RPC 2.0 message")


def _next_item(stdin: BinaryIO, limit: int) -> tuple[str, SessionMessage | None]:
    """Blocking (runs in the stdin thread): read and classify one line as eof/skip/message/reply.

    Parsing happens here too, so a huge or pathological line never stalls the event loop.
    """
    line = stdin.readline(limit + 1)  # bounded: an endless line cannot exhaust memory
    if not line:
        return "eof", None
    if len(line) > limit and not line.endswith(b"\n"):
        while (chunk := stdin.readline(_DISCARD_CHUNK)) and not chunk.endswith(b"\n"):
            pass
        return _too_large(line, limit)
    return _classify(line)


def _too_large(line: bytes, limit: int) -> tuple[str, SessionMessage | None]:
    logger.warning("rejected a request over %d bytes", limit)
    return "reply", _reply_for_bad_line(line, None)


def _classify(line: bytes) -> tuple[str, SessionMessage | None]:
    """One whole line as skip/message/reply."""
    if not line.strip():
        return "skip", None
    try:
        text = line.decode("utf-8", errors="replace")  # as lenient as the SDK's reader
        message = types.jsonrpc_message_adapter.validate_json(text, by_name=False)
    except Exception as exc:
        return "reply", _reply_for_bad_line(line, exc)
    if isinstance(message, types.JSONRPCNotification) and "id" in scan_envelope(line)[1]:
        # A request whose id is neither a string nor an integer (1.5, true, null, {...}) parses as a
        # notification, the id ignored: the SDK would run it and answer nothing. JSON-RPC 2.0 says answer it.
        logger.info("refused a request whose id is not a string or an integer")
        return "reply", _error(None, types.INVALID_REQUEST, _BAD_ID)
    return "message", SessionMessage(message)


@contextmanager
def _claim_stdio() -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """Serve the wire from private fd duplicates; meanwhile fd 0 is /dev/null and fd 1 is stderr.

    So stray prints (tools, libraries, children) land on stderr instead of
    corrupting the JSON-RPC stream, and nothing else can consume our input.
    """
    if sys.platform == "win32":  # pragma: no cover - the fd juggling is POSIX-only
        yield sys.stdin.buffer, sys.stdout.buffer
        return
    import fcntl

    sys.stdout.flush()  # anything buffered before we started was meant for the wire
    wire_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    wire_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(devnull, 0)
        os.dup2(2, 1)
    finally:
        os.close(devnull)
    try:
        # Never closed: an abandoned reader thread may still block on wire_in, and a
        # closed fd number could be recycled under it (the SDK makes the same choice).
        yield os.fdopen(wire_in, "rb", closefd=False), os.fdopen(wire_out, "wb", closefd=False)
    finally:
        sys.stdout.flush()  # stray prints still buffered belong on stderr, not the wire
        os.dup2(wire_out, 1)
        os.dup2(wire_in, 0)


async def serve_stdio(
    mcp: fastmcp.FastMCP,
    *,
    max_line_bytes: int = 16 * 1024 * 1024,
    after_first_answer: Callable[[], None] | None = None,
) -> None:
    """Serve ``mcp`` over stdio until stdin reaches EOF; every request gets an answer.

    Like ``mcp.run_stdio_async(show_banner=False)``, but lines the MCP library
    cannot parse, and lines over ``max_line_bytes``, get JSON-RPC errors.
    ``after_first_answer`` is called once the first answer is written (to load what can wait).
    """
    token = set_transport("stdio")
    try:
        # Claim the wire first so output during lifespan startup cannot reach stdout either.
        with _claim_stdio() as (stdin, stdout):
            async with lifespan(mcp):
                await _serve(mcp, stdin, stdout, max_line_bytes, after_first_answer)
    finally:
        reset_transport(token)


async def _serve(
    mcp: fastmcp.FastMCP,
    stdin: BinaryIO,
    stdout: BinaryIO,
    max_line_bytes: int,
    after_first_answer: Callable[[], None] | None,
) -> None:
    # Long on purpose: the reader and the writer share the in-flight set and the streams they
    # hand frames through; as closures they keep that state between the two of them alone.
    to_server, from_reader = context_streams(SessionMessage | Exception)
    to_wire, from_server = context_streams(SessionMessage)
    # Error replies share the server's write stream, so one writer orders all frames;
    # the clone keeps it open after the server closes its end until the reader is done.
    replies_to_wire = to_wire.clone()
    in_flight: set[Any] = set()  # ids of requests handed to the server and not answered yet
    # Pipes and sockets (what hosts give us) are served on the event loop, non-blocking: two thread
    # hand-offs per call cost more CPU than the rest of a small call's transport. Anything else
    # (a file, a terminal shared with a shell) keeps the blocking threads.
    in_fd, out_fd = _pollable(stdin), _pollable(stdout)

    async def reader() -> None:
        lines = (
            _lines_on_loop(in_fd, max_line_bytes)
            if in_fd is not None
            else _lines_in_thread(stdin, max_line_bytes)
        )
        async with to_server, replies_to_wire:
            async for kind, item in lines:
                if kind == "eof":
                    logger.info("stdin closed; shutting down")
                    # A request on the last line (even one without a newline) still gets its answer,
                    # unless it takes longer than the grace a quitting host can be made to wait.
                    with anyio.move_on_after(_EOF_GRACE_SECONDS):
                        while in_flight:
                            await anyio.sleep(0.01)
                    return
                if item is not None and isinstance(item.message, types.JSONRPCRequest):
                    in_flight.add(item.message.id)
                if item is not None:
                    await _send(to_server if kind == "message" else replies_to_wire, item)

    async def writer(scope: anyio.CancelScope) -> None:
        first_answer = after_first_answer
        async with from_server:
            try:
                async for session_message in from_server:
                    message = session_message.message
                    frame = message.model_dump_json(by_alias=True, exclude_unset=True)
                    if out_fd is not None:
                        await _write_on_loop(out_fd, frame.encode("utf-8") + b"\n")
                    else:
                        await anyio.to_thread.run_sync(_write_frame, stdout, frame, abandon_on_cancel=True)
                    if isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
                        in_flight.discard(message.id)
                        if first_answer is not None:
                            first_answer()
                            first_answer = None
            except OSError as exc:
                # The client is gone: stop serving, so the lifespan teardown still runs.
                logger.warning("stdout closed (%s); shutting down", exc)
                scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(writer, tg.cancel_scope)
        logger.info("Starting MCP server %r with transport 'stdio'", mcp.name)
        server = low_level(mcp)
        await server.run(from_reader, to_wire, server.create_initialization_options())


def _pollable(stream: BinaryIO) -> int | None:
    """The stream's descriptor, switched to non-blocking, if it is a pipe or a socket; else None."""
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError):
        return None
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return None
    os.set_blocking(fd, False)
    return fd


async def _lines_in_thread(stdin: BinaryIO, limit: int) -> AsyncIterator[tuple[str, SessionMessage | None]]:
    lines, lines_out = anyio.create_memory_object_stream[tuple[str, SessionMessage | None]](0)
    async with BlockingPortal() as portal, lines, lines_out:
        # A daemon thread, not anyio.to_thread: a read still blocked on stdin when
        # serving stops must not keep the interpreter from exiting.
        args = (stdin, limit, portal, lines)
        threading.Thread(target=_pump_stdin, args=args, name="mcp-stdin", daemon=True).start()
        async for item in lines_out:
            yield item


async def _lines_on_loop(fd: int, limit: int) -> AsyncIterator[tuple[str, SessionMessage | None]]:
    """Read and classify lines on the event loop; a large line is parsed on a worker thread, so a
    huge or pathological one never stalls the loop."""
    buffer = bytearray()
    discarding: bytes | None = None  # the head of an over-long line, while its rest is skipped
    while True:
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            await anyio.wait_readable(fd)
            continue
        if not chunk:  # end of input: a last line without its newline still counts
            if discarding is not None:
                yield _too_large(discarding, limit)
            elif buffer:
                yield await _classify_sized(bytes(buffer))
            yield "eof", None
            return
        start = 0
        if discarding is not None:
            end = chunk.find(b"\n")
            if end < 0:
                continue
            yield _too_large(discarding, limit)
            discarding = None
            start = end + 1
        buffer += chunk[start:] if start else chunk
        scanned = 0
        while (end := buffer.find(b"\n", scanned)) >= 0:
            if end + 1 - scanned > limit:
                yield _too_large(bytes(buffer[scanned : scanned + limit + 1]), limit)
            else:
                yield await _classify_sized(bytes(buffer[scanned : end + 1]))
            scanned = end + 1
        del buffer[:scanned]
        if len(buffer) > limit:
            discarding = bytes(buffer[: limit + 1])
            buffer.clear()


async def _classify_sized(line: bytes) -> tuple[str, SessionMessage | None]:
    if len(line) <= _INLINE_PARSE_BYTES:
        return _classify(line)
    return await anyio.to_thread.run_sync(_classify, line)


async def _write_on_loop(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await anyio.wait_writable(fd)


async def _send(stream: ContextSendStream[Any], item: SessionMessage) -> None:
    try:
        await stream.send(item)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
        logger.debug("dropped a message: its consumer has stopped")


def _pump_stdin(
    stdin: BinaryIO, limit: int, portal: BlockingPortal, out: MemoryObjectSendStream[tuple[str, Any]]
) -> None:
    """Thread body: hand each classified line to the event loop, one at a time (back-pressure)."""
    while True:
        item = _next_item(stdin, limit)
        try:
            portal.call(out.send, item)
        except Exception:  # portal or stream closed: serving has stopped
            return
        if item[0] == "eof":
            return


def _write_frame(stdout: BinaryIO, frame: str) -> None:
    stdout.write(frame.encode("utf-8") + b"\n")
    stdout.flush()  # one frame per flush: the client reads line by line
