"""Encoding 10,000 endpoints (100 services × 100) must stay cheap: the control plane does it per push."""

from __future__ import annotations

import time

import pytest

from meshlib.xds import ClientKind, encode_resources
from meshlib.xds import type_urls as urls
from tests.unit.xds.helpers import big_snapshot


@pytest.mark.parametrize("client", list(ClientKind))
def test_ten_thousand_endpoints_encode_fast(client: ClientKind) -> None:
    snapshot = big_snapshot()
    encode_resources(snapshot, client)  # warm up imports and descriptor pools
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        resources = encode_resources(snapshot, client)
        best = min(best, time.perf_counter() - started)
    assignments = resources[urls.CLUSTER_LOAD_ASSIGNMENT]
    assert sum(len(g.lb_endpoints) for a in assignments.values() for g in a.endpoints) == 10_000
    assert best < 0.2, f"{client}: {best * 1000:.0f} ms"
