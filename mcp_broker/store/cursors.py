"""Opaque dead-letter cursors: a position in one engine's order, marked with the engine that issued it."""

from __future__ import annotations

import base64


def encode(kind: str, position: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode()


def decode(kind: str, cursor: str, limit: int) -> int:
    """The position in a cursor ``encode(kind, ...)`` issued; ``ValueError`` for any other text."""
    try:
        found, _, number = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        position = int(number)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("not a dead-letter cursor of this store") from exc
    if found != kind or not 0 <= position < limit:
        raise ValueError("not a dead-letter cursor of this store")
    return position
