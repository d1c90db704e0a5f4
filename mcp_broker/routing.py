"""Which version a message travels in, and which adapters carry it to a version the recipient accepts.

Pure decisions over what the store read: registered versions, adapter edges, and the version
ranges of sender and recipient. The broker applies the chosen route to the payload.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from . import adapters, versions
from .errors import NoCommonVersion, NotAccepted
from .versions import VersionRange


@dataclass(frozen=True)
class Route:
    """``sent`` is the version the payload was written in; ``hops`` lead to ``delivered`` (none: direct)."""

    sent: str
    delivered: str
    hops: tuple[adapters.Edge, ...] = ()

    @property
    def adapted(self) -> bool:
        return bool(self.hops)

    @property
    def path(self) -> list[str]:
        return [self.sent, *(to for _, to in self.hops)]


Allowed = Callable[[str], bool]


def _any(_: str) -> bool:
    return True


def route_to(
    sent: str, accepts: VersionRange, edges: Iterable[adapters.Edge], allowed: Allowed = _any
) -> Route | None:
    """Direct when the recipient accepts ``sent``; else the shortest adapter path to a version it accepts.

    ``allowed`` narrows the versions a message may be delivered in (e.g. those with the capability
    the message needs: an adapter must not turn a broadcast into a version that forbids broadcast).
    """

    def fits(version: str) -> bool:
        return accepts.contains(version) and allowed(version)

    if fits(sent):
        return Route(sent, sent)
    path = adapters.find_path(edges, sent, fits)
    if not path:
        return None
    return Route(sent, path[-1][1], tuple(path))


def choose_route(
    *,
    protocol: str,
    recipient: str,
    known: Sequence[str],
    edges: Sequence[adapters.Edge],
    theirs: VersionRange | None,
    mine: VersionRange | None,
    agreed: str | None = None,
    explicit: str | None = None,
    allowed: Allowed = _any,
) -> Route:
    """The route for a point-to-point message: explicit version, else the agreed one, else the highest
    version both accept, else the highest version the sender speaks that adapters can carry over."""
    if theirs is None:
        raise NotAccepted(f"{recipient} does not speak {protocol!r}; negotiate to see what it speaks")
    if explicit is not None:
        route = route_to(explicit, theirs, edges, allowed)
        if route is None:
            raise NotAccepted(
                f"{recipient} does not accept {protocol} {explicit}; it accepts {theirs}, and no adapter leads there"
                f" (a route chains at most {adapters.MAX_HOPS} adapters)"
            )
        return route
    if (
        agreed is not None
        and allowed(agreed)
        and (route := route_to(agreed, theirs, edges, allowed)) is not None
    ):
        return route
    ranges = [theirs, mine] if mine is not None else [theirs]
    best = versions.highest_common([v for v in known if allowed(v)], *ranges)
    if best is not None:
        return Route(best, best)
    for candidate in versions.sort_versions_desc(
        v for v in known if (mine is None or mine.contains(v)) and allowed(v)
    ):
        if (route := route_to(candidate, theirs, edges, allowed)) is not None:
            return route
    listed = ", ".join(reversed(versions.sort_versions_desc(known))) or "none"
    raise NoCommonVersion(
        f"no registered version of {protocol!r} ({listed}) is accepted by {recipient} ({theirs})"
        + (f" and by you ({mine})" if mine else "")
        + f", and no adapter bridges them (a route chains at most {adapters.MAX_HOPS}); register_adapter can"
    )


def sending_version(
    known: Sequence[str], mine: VersionRange, theirs: VersionRange, edges: Sequence[adapters.Edge]
) -> Route | None:
    """For negotiation: the newest version I speak that reaches the peer, directly or through adapters."""
    for candidate in versions.sort_versions_desc(v for v in known if mine.contains(v)):
        if (route := route_to(candidate, theirs, edges)) is not None:
            return route
    return None
