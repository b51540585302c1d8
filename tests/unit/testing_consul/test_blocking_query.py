"""``blocking_query``: Consul's wait, jitter and release rules, with an injected RNG."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from meshlib.testing.consul.http_query import QueryOptions, blocking_query
from meshlib.testing.consul.state import CatalogStore


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def options(min_index: int, wait: float) -> QueryOptions:
    return QueryOptions(min_index=min_index, wait=wait, consistency="leader", cached=False, datacenter="dc1",
                        token="", filter="")


def compute_from(store: CatalogStore) -> Any:
    return lambda: (store.table_index("services"), {"index": store.table_index("services")})


@pytest.mark.asyncio
async def test_index_zero_and_a_newer_index_never_block() -> None:
    store = CatalogStore("dc1")
    with store.txn() as tx:
        tx.touch("services")
    started = time.monotonic()
    assert (await blocking_query(store, options(0, 60), ["services"], compute_from(store), rng=FixedRandom(0)))[0] == 1
    with store.txn() as tx:
        tx.touch("services")
    assert (await blocking_query(store, options(1, 60), ["services"], compute_from(store), rng=FixedRandom(0)))[0] == 2
    assert time.monotonic() - started < 1


@pytest.mark.asyncio
@pytest.mark.parametrize("draw", [0.0, 1.0])
async def test_timeout_is_wait_plus_up_to_a_sixteenth(draw: float) -> None:
    store = CatalogStore("dc1")
    with store.txn() as tx:
        tx.touch("services")
    parked: list[int] = []
    started = time.monotonic()
    index, _ = await blocking_query(store, options(1, 0.32), ["services"], compute_from(store),
                                    rng=FixedRandom(draw), parked=parked.append)
    elapsed = time.monotonic() - started
    assert index == 1
    assert elapsed >= 0.32 + draw * 0.02 - 0.005
    assert parked == [1, -1]


@pytest.mark.asyncio
async def test_a_write_to_the_topic_or_a_restore_or_stop_releases_it() -> None:
    store = CatalogStore("dc1")
    with store.txn() as tx:
        tx.touch("services")
    query = asyncio.create_task(blocking_query(store, options(1, 30), ["services"], compute_from(store),
                                               rng=FixedRandom(0)))
    await asyncio.sleep(0)
    with store.txn() as tx:
        tx.touch("services")
    assert (await asyncio.wait_for(query, 2))[0] == 2
    query = asyncio.create_task(blocking_query(store, options(2, 30), ["services"], compute_from(store),
                                               rng=FixedRandom(0)))
    await asyncio.sleep(0)
    store.restore_snapshot(1)
    assert (await asyncio.wait_for(query, 2))[0] == 1  # backwards: returned at once, not after 30 s
    stopping = False
    query = asyncio.create_task(blocking_query(store, options(1, 30), ["services"], compute_from(store),
                                               rng=FixedRandom(0), stop=lambda: stopping))
    await asyncio.sleep(0)
    stopping = True
    store.wake_all()
    assert (await asyncio.wait_for(query, 2))[0] == 1
