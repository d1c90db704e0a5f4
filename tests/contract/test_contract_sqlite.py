"""The store contract on the SQLite engine: each store a connection to one file in ``tmp_path``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from mcp_broker.store.contract import Store
from mcp_broker.store.sqlite import SqliteStore

from .features_contract import FeaturesContract
from .limits_contract import LimitsContract
from .namespace_contract import NamespaceContract, Namespaced
from .store_contract import StoreContract, StoreFactory
from .traffic_contract import TrafficContract


class TestSqliteStore(StoreContract, TrafficContract, FeaturesContract, LimitsContract, NamespaceContract):
    @pytest.fixture
    async def store_factory(self, db_path: Path) -> AsyncIterator[StoreFactory]:
        async with AsyncExitStack() as stack:

            async def open_store() -> Store:
                store = SqliteStore(db_path)
                await store.open()
                stack.push_async_callback(store.close)
                return store

            yield open_store

    @pytest.fixture
    async def store(self, store_factory: StoreFactory) -> Store:
        return await store_factory()

    @pytest.fixture
    async def namespaced(self, db_path: Path) -> AsyncIterator[Namespaced]:
        """Stores on the one file, each in the namespace named."""
        async with AsyncExitStack() as stack:

            async def open_store(namespace: str) -> Store:
                store = SqliteStore(db_path, namespace=namespace)
                await store.open()
                stack.push_async_callback(store.close)
                return store

            yield open_store
