"""Readable output of people's commands: rich tables of the values ``views.py`` returns.

Every cell is a ``rich.text.Text``, never markup: a payload or a name that reads ``[bold]`` is shown
as typed. Payloads are other agents' text, so they appear as a short neutralised preview.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..text import neutralise

PREVIEW_CHARS = 60


def _cell(value: Any) -> Text:
    if value is None:
        return Text("-", style="dim")
    return Text(neutralise(str(value), 200))


def preview(payload: Any, limit: int = PREVIEW_CHARS) -> Text:
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, default=str)
    return Text(neutralise(text[: limit * 4], limit), style="dim")


def age(seconds: float | None) -> str:
    """``42s``, ``5m 3s``, ``2h 10m``, ``3d 4h``."""
    if seconds is None:
        return "-"
    s = int(seconds)
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit} {(s % size) // subsize}{sub}"
    return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"


def _short_time(stamp: str | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    out = Table(title=title, title_justify="left", header_style="bold", show_edge=False, pad_edge=False)
    for column in columns:
        out.add_column(
            column, overflow="ellipsis" if column == "payload" else "fold", no_wrap=column == "payload"
        )
    for row in rows:
        out.add_row(*(value if isinstance(value, Text) else _cell(value) for value in row))
    return out


def _rate(rate: dict[str, Any] | None) -> Text:
    if rate is None:
        return Text("-", style="dim")
    if rate["limited"]:
        return Text(f"{rate['sent_last_minute']} (limited)", style="red")
    return Text(str(rate["sent_last_minute"]))


def history(data: dict[str, Any]) -> RenderableType:
    if not data["messages"]:
        return Text("no messages in the history")
    title = (
        f"history of {data['session']}, newest first"
        if data["session"]
        else "every session's sends, newest first"
    )
    rows = (
        (
            _short_time(m["created_at"]),
            m["direction"] if data["session"] else "",
            m["sender"],
            ", ".join(f"{d['recipient']} ({d['state']})" for d in m["deliveries"]) or "-",
            f"{m['protocol']} {m['version']}",
            m["kind"] + (f" replay of {m['replay_of'][:8]}" if m["replay_of"] else ""),
            preview(m["payload"]),
        )
        for m in data["messages"]
    )
    parts: list[RenderableType] = [
        table(title, ("sent", "way", "from", "to (state)", "protocol", "kind", "payload"), rows)
    ]
    if data["next_cursor"]:
        parts.append(Text(f"more: --cursor {data['next_cursor']}", style="dim"))
    return Group(*parts)


def _status_style(status: str) -> Text:
    return Text(status, style={"active": "green", "stale": "yellow"}.get(status, "dim"))


def sessions(data: dict[str, Any], title: str | None = "sessions") -> Table:
    return table(
        title,
        ("name", "status", "waiting", "host", "pid", "last seen", "sent/min", "protocols"),
        (
            (
                s["name"],
                _status_style(s["status"]),
                s["queue_depth"],
                s["host"],
                s["pid"],
                _short_time(s["last_seen"]),
                _rate(s.get("rate")),
                ", ".join(f"{p['name']} {p['versions']}" for p in s["protocols"]),
            )
            for s in data["sessions"]
        ),
    )


def status(data: dict[str, Any]) -> RenderableType:
    store = data["store"]
    size = ""
    if "size_bytes" in store:
        size = f", {store['size_bytes'] / 1024:,.0f} KiB (+ WAL {store['wal_bytes'] / 1024:,.0f} KiB)"
    counts = ", ".join(f"{n} {s}" for s, n in data["by_status"].items())
    head = Text()
    head.append("store      ", style="bold")
    head.append(f"{store['url']} ({store['engine']}{size}, durability {store['durability']})\n")
    head.append("sessions   ", style="bold")
    head.append(f"{counts}\n")
    head.append("waiting    ", style="bold")
    oldest = data["oldest_waiting_age_seconds"]
    head.append(f"{data['waiting']}" + (f" (oldest {age(oldest)} old)" if oldest is not None else "") + "\n")
    head.append("dead       ", style="bold")
    head.append(f"{data['dead_letters']}\n")
    head.append("last event ", style="bold")
    head.append(f"{_short_time(data['last_activity']) or 'none yet'}\n")
    parts: list[RenderableType] = [head]
    if data["sessions"]:
        parts.append(sessions(data, title=None))
    return Group(*parts)


def protocols(data: dict[str, Any]) -> RenderableType:
    rows = []
    for family in data["protocols"]:
        adapters = ", ".join(f"{a['from_version']}→{a['to_version']}" for a in family["adapters"])
        for i, v in enumerate(family["versions"]):
            rows.append(
                (
                    family["name"] if i == 0 else "",
                    v["version"],
                    ", ".join(v["capabilities"]),
                    v["description"],
                    adapters if i == 0 else "",
                )
            )
    return table(None, ("protocol", "version", "capabilities", "description", "adapters"), rows)


def protocol_version(data: dict[str, Any]) -> RenderableType:
    head = Text()
    head.append(f"{data['name']} {data['version']}", style="bold")
    head.append(f"  {', '.join(data['capabilities'])}  registered {_short_time(data['registered_at'])}\n")
    description = data["metadata"].get("description")
    if description:
        head.append(neutralise(str(description), 500) + "\n")
    parts: list[RenderableType] = [
        head,
        Text("schema", style="bold"),
        Text(json.dumps(data["schema"], indent=2)),
    ]
    if data["response_schema"] is not None:
        parts += [Text("response_schema", style="bold"), Text(json.dumps(data["response_schema"], indent=2))]
    return Group(*parts)


def _messages(rows: list[dict[str, Any]], title: str | None, *, recipient: bool = False) -> Table:
    columns = [
        "message_id",
        "from",
        *(["to"] if recipient else []),
        "protocol",
        "state",
        "tries",
        "sent",
        "payload",
    ]
    return table(
        title,
        columns,
        (
            (
                m["message_id"],
                m["sender"],
                *([m["recipient"]] if recipient else []),
                f"{m['protocol']} {m['version']}",
                m["reason"] if m["state"] == "dead_lettered" and m["reason"] else m["state"],
                m["attempts"],
                _short_time(m["created_at"]),
                preview(m["payload"]),
            )
            for m in rows
        ),
    )


def inbox(data: dict[str, Any]) -> RenderableType:
    if not data["messages"]:
        return Text(f"nothing waits for {data['session']}")
    return _messages(data["messages"], f"waiting for {data['session']} (a peek: nothing was leased)")


def dead_letters(data: dict[str, Any]) -> RenderableType:
    if not data["dead_letters"]:
        return Text("no dead letters")
    parts: list[RenderableType] = [_messages(data["dead_letters"], None, recipient=True)]
    if data["next_cursor"]:
        parts.append(Text(f"more: --cursor {data['next_cursor']}", style="dim"))
    return Group(*parts)


def counts(verb: str, moved: dict[str, int], none: str) -> RenderableType:
    lines = Text()
    for message_id, count in moved.items():
        if count:
            lines.append(f"{message_id}: {verb} {count} deliver{'y' if count == 1 else 'ies'}\n")
        else:
            lines.append(f"{message_id}: {none}\n", style="yellow")
    return lines


def pruned(data: dict[str, Any]) -> RenderableType:
    done = ", ".join(f"{n} {what}" for what, n in data["pruned"].items()) or "nothing"
    return Text(f"pruned (older than {data['older_than_days']:g} days): {done}")


def console() -> Console:
    """stdout, wide enough that a table in a pipe or a log is not folded at 80 columns."""
    probe = Console()
    return Console(width=None if probe.is_terminal else 160, highlight=False, soft_wrap=False)
