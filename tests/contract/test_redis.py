"""The store contract on the Redis engine: each test in a namespace of its own on one redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from mcp_broker.store.contract import Store

from .features_contract import FeaturesContract
from .limits_contract import LimitsContract
from .namespace_contract import NamespaceContract, Namespaced
from .store_contract import StoreContract, StoreFactory
from .traffic_contract import TrafficContract


class TestRedisStore(StoreContract, TrafficContract, FeaturesContract, LimitsContract, NamespaceContract):
    @pytest.fixture
    async def store_factory(self, redis_url: str) -> AsyncIterator[StoreFactory]:
        from mcp_broker.store.redis import RedisStore

        async with AsyncExitStack() as stack:

            async def open_store() -> Store:
                store = RedisStore(redis_url)
                await store.open()
                stack.push_async_callback(store.close)
                return store

            yield open_store

    @pytest.fixture
    async def store(self, store_factory: StoreFactory) -> Store:
        return await store_factory()

    @pytest.fixture
    async def namespaced(self, redis_url: str) -> AsyncIterator[Namespaced]:
        """Stores on the one server, each in the namespace named, made unique to this test."""
        from mcp_broker.store.redis import RedisStore
        from mcp_broker.store.redis.connection import RedisUrl

        base = RedisUrl.parse(redis_url)
        async with AsyncExitStack() as stack:

            async def open_store(namespace: str) -> Store:
                store = RedisStore(base.connect, namespace=f"{base.namespace}-{namespace}")
                await store.open()
                stack.push_async_callback(store.close)
                return store

            yield open_store
