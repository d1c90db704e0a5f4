"""Unit tests of version routing: which version a message travels in, and which adapters carry it."""

from __future__ import annotations

import pytest

from mcp_broker.errors import NoCommonVersion, NotAccepted
from mcp_broker.routing import Route, choose_route, route_to, sending_version
from mcp_broker.versions import VersionRange, parse_range

KNOWN = ["1.0.0", "1.1.0", "2.0.0"]
UP_CHAIN = [("1.0.0", "1.1.0"), ("1.1.0", "2.0.0")]
BOTH_WAYS = [*UP_CHAIN, ("2.0.0", "1.1.0")]


def rng(text: str) -> VersionRange:
    return parse_range(text)


def route(**overrides: object) -> Route:
    """``choose_route`` with a 1.x sender, a 2.x recipient and the adapters both ways, unless overridden."""
    arguments: dict[str, object] = {
        "protocol": "note",
        "recipient": "new",
        "known": KNOWN,
        "edges": BOTH_WAYS,
        "theirs": rng("^2"),
        "mine": rng("^1"),
    }
    arguments.update(overrides)
    return choose_route(**arguments)  # type: ignore[arg-type]


# --- Route --------------------------------------------------------------------------------------


def test_a_direct_route_has_no_hops_and_a_one_version_path() -> None:
    direct = Route("1.0.0", "1.0.0")
    assert not direct.adapted
    assert direct.path == ["1.0.0"]


def test_an_adapted_route_lists_every_version_it_passes() -> None:
    adapted = Route("1.0.0", "2.0.0", (("1.0.0", "1.1.0"), ("1.1.0", "2.0.0")))
    assert adapted.adapted
    assert adapted.path == ["1.0.0", "1.1.0", "2.0.0"]


# --- route_to ------------------------------------------------------------------------------------


def test_route_to_is_direct_when_the_recipient_accepts_the_sent_version() -> None:
    # Adapters exist, but a version the recipient accepts is never transformed.
    assert route_to("1.1.0", rng(">=1.0"), UP_CHAIN) == Route("1.1.0", "1.1.0")


def test_route_to_follows_a_chain_of_adapters() -> None:
    found = route_to("1.0.0", rng("^2"), UP_CHAIN)
    assert found == Route("1.0.0", "2.0.0", (("1.0.0", "1.1.0"), ("1.1.0", "2.0.0")))


def test_route_to_downgrades_too() -> None:
    found = route_to("2.0.0", rng("^1"), BOTH_WAYS)
    assert found is not None
    assert found.path == ["2.0.0", "1.1.0"]


def test_route_to_prefers_the_shortest_path_then_the_newest_target() -> None:
    edges = [*UP_CHAIN, ("1.0.0", "2.0.0"), ("1.0.0", "1.2.0")]
    assert route_to("1.0.0", rng(">=1.1"), edges) == Route("1.0.0", "2.0.0", (("1.0.0", "2.0.0"),))


def test_route_to_is_none_without_a_path() -> None:
    assert route_to("1.0.0", rng("^2"), []) is None
    assert route_to("2.0.0", rng("^1"), UP_CHAIN) is None  # adapters only lead upwards


def test_route_to_terminates_on_cycles() -> None:
    cycle = [("1.0.0", "1.1.0"), ("1.1.0", "1.0.0"), ("1.1.0", "1.2.0"), ("1.2.0", "1.0.0")]
    assert route_to("1.0.0", rng("^3"), cycle) is None
    assert route_to("1.0.0", rng("==1.2.0"), cycle) == Route(
        "1.0.0", "1.2.0", (("1.0.0", "1.1.0"), ("1.1.0", "1.2.0"))
    )


# --- choose_route --------------------------------------------------------------------------------


def test_recipient_that_does_not_speak_the_protocol_is_not_accepted() -> None:
    with pytest.raises(NotAccepted, match="new does not speak 'note'"):
        route(theirs=None)


def test_an_explicit_version_is_used_directly_when_accepted() -> None:
    assert route(explicit="1.0.0", theirs=rng(">=1.0")) == Route("1.0.0", "1.0.0")


def test_an_explicit_version_is_adapted_when_the_recipient_does_not_accept_it() -> None:
    assert route(explicit="1.0.0").path == ["1.0.0", "1.1.0", "2.0.0"]


def test_an_explicit_version_wins_over_the_agreed_one() -> None:
    assert route(explicit="1.0.0", agreed="1.1.0").sent == "1.0.0"


def test_an_explicit_version_without_a_path_is_refused_naming_what_the_recipient_accepts() -> None:
    with pytest.raises(NotAccepted) as caught:
        route(explicit="1.0.0", edges=[])
    assert "accepts ^2" in caught.value.message
    assert "no adapter" in caught.value.message


def test_the_agreed_version_is_used_even_when_a_higher_common_one_exists() -> None:
    both = rng(">=1.0")
    assert route(theirs=both, mine=both, agreed="1.0.0") == Route("1.0.0", "1.0.0")


def test_an_agreed_version_reached_through_adapters_is_adapted() -> None:
    assert route(agreed="1.1.0").path == ["1.1.0", "2.0.0"]


def test_an_agreed_version_that_no_longer_reaches_the_recipient_falls_back() -> None:
    # The recipient reconnected with another range after the agreement: the agreement is stale.
    assert route(agreed="1.0.0", edges=[], theirs=rng(">=1.1"), mine=rng(">=1.0")) == Route("2.0.0", "2.0.0")


def test_without_agreement_the_highest_common_version_is_direct() -> None:
    assert route(theirs=rng(">=1.0"), mine=rng("<2")) == Route("1.1.0", "1.1.0")


def test_a_common_version_beats_an_adapted_route_from_a_newer_one() -> None:
    # The sender's newest version (2.0.0) would reach 1.x through an adapter; direct 1.1.0 is preferred.
    assert route(theirs=rng("^1"), mine=rng(">=1.0")) == Route("1.1.0", "1.1.0")


def test_without_a_sender_range_any_registered_version_is_a_candidate() -> None:
    assert route(mine=None, theirs=rng("^1")) == Route("1.1.0", "1.1.0")
    assert route(mine=None, theirs=rng(">=3"), edges=[("2.0.0", "3.0.0")], known=[*KNOWN, "3.0.0"]) == Route(
        "3.0.0", "3.0.0"
    )


def test_without_a_common_version_the_newest_sender_version_that_adapters_carry_is_used() -> None:
    assert route() == Route("1.1.0", "2.0.0", (("1.1.0", "2.0.0"),))
    # 1.1.0 has no way across, so the sender falls back to 1.0.0, which has.
    assert route(edges=[("1.0.0", "2.0.0")]) == Route("1.0.0", "2.0.0", (("1.0.0", "2.0.0"),))


def test_the_sender_never_writes_in_a_version_outside_its_own_range() -> None:
    # 2.0.0 is registered and the recipient accepts it, but the sender speaks only 1.0.x.
    found = route(mine=rng("~1.0"))
    assert found.sent == "1.0.0"
    assert found.path == ["1.0.0", "1.1.0", "2.0.0"]


def test_no_common_version_and_no_adapter_says_so() -> None:
    with pytest.raises(NoCommonVersion) as caught:
        route(edges=[])
    message = caught.value.message
    assert "1.0.0, 1.1.0, 2.0.0" in message
    assert "new (^2)" in message
    assert "you (^1)" in message
    assert "register_adapter" in message


def test_no_common_version_without_a_sender_range() -> None:
    with pytest.raises(NoCommonVersion) as caught:
        route(mine=None, theirs=rng(">=3"), edges=[])
    assert "you" not in caught.value.message


# --- sending_version -----------------------------------------------------------------------------


def test_sending_version_is_direct_when_both_accept_a_version() -> None:
    assert sending_version(KNOWN, rng(">=1.0"), rng("^1"), []) == Route("1.1.0", "1.1.0")


def test_sending_version_is_the_newest_own_version_that_reaches_the_peer() -> None:
    assert sending_version(KNOWN, rng("^1"), rng("^2"), BOTH_WAYS) == Route(
        "1.1.0", "2.0.0", (("1.1.0", "2.0.0"),)
    )
    assert sending_version(KNOWN, rng("^2"), rng("^1"), BOTH_WAYS) == Route(
        "2.0.0", "1.1.0", (("2.0.0", "1.1.0"),)
    )


def test_sending_version_is_none_when_nothing_reaches_the_peer() -> None:
    assert sending_version(KNOWN, rng("^2"), rng("^1"), UP_CHAIN) is None
    assert sending_version(KNOWN, rng("^3"), rng("^1"), BOTH_WAYS) is None  # nothing registered in ^3
