"""The contract's caps: a store holds at most so many sessions, protocol versions and adapters."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mcp_broker.store.contract import Added, Full, Store

from .store_contract import T0, adapter, claim, connect, protocol


class LimitsContract:
    async def test_a_protocol_version_past_the_cap_is_not_stored(self, store: Store) -> None:
        assert await store.add_protocol(protocol("chat", "1.0.0"), max_versions=2) is Added.registered
        assert await store.add_protocol(protocol("note", "1.0.0"), max_versions=2) is Added.registered
        assert await store.add_protocol(protocol("chat", "1.1.0"), max_versions=2) is Added.full
        assert await store.add_protocol(protocol("chat", "1.0.0"), max_versions=2) is Added.unchanged
        assert {(r.name, r.version) for r in await store.list_protocols()} == {
            ("chat", "1.0.0"),
            ("note", "1.0.0"),
        }
        assert await store.add_protocol(protocol("chat", "1.1.0")) is Added.registered  # no cap given

    async def test_an_adapter_past_the_cap_is_not_stored(self, store: Store) -> None:
        for version in ("1.0.0", "1.1.0", "2.0.0"):
            await store.add_protocol(protocol("chat", version))
        assert await store.add_adapter(adapter("chat", "1.0.0", "1.1.0"), max_adapters=1) is Added.registered
        assert await store.add_adapter(adapter("chat", "1.1.0", "2.0.0"), max_adapters=1) is Added.full
        assert len(await store.list_adapters("chat")) == 1

    async def test_a_new_session_past_the_cap_is_refused_and_a_resume_is_not(self, store: Store) -> None:
        alice = await connect(store, "alice")
        await connect(store, "bob")
        seen = await store.find_session("carol", is_id=False, now=T0)
        with pytest.raises(Full):
            await store.claim_session(
                replace(claim("carol", "owner-carol", now=T0, seen=seen), max_sessions=2)
            )
        assert await store.find_session("carol", is_id=False, now=T0) is None
        again = await store.claim_session(
            replace(claim("alice", "owner-new", now=T0 + 1, seen=alice), max_sessions=2)
        )
        assert again.id == alice.id  # taking a row over creates nothing

    async def test_a_claim_records_the_broker_version_of_its_process(self, store: Store) -> None:
        seen = await store.find_session("dana", is_id=False, now=T0)
        row = await store.claim_session(
            replace(claim("dana", "owner-dana", now=T0, seen=seen), broker_version="9.9.9")
        )
        assert row.broker_version == "9.9.9"
        again = await store.claim_session(
            replace(claim("dana", "owner-dana", now=T0 + 1, seen=row), broker_version="1.0")
        )
        found = await store.find_session("dana", is_id=False, now=T0 + 1)
        assert again.broker_version == "1.0" and found is not None and found.broker_version == "1.0"
