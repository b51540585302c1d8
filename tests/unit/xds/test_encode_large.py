"""10,000 endpoints (100 services × 100) encode completely for every client kind.

How fast is measured by ``bench/snapshot_build.py`` (benchmarks are not tests).
"""

from __future__ import annotations

import pytest

from meshlib.xds import ClientKind, encode_resources
from meshlib.xds import type_urls as urls
from tests.unit.xds.helpers import big_snapshot


@pytest.mark.parametrize("client", list(ClientKind))
def test_ten_thousand_endpoints_encode_completely(client: ClientKind) -> None:
    resources = encode_resources(big_snapshot(), client)
    assignments = resources[urls.CLUSTER_LOAD_ASSIGNMENT]
    assert sum(len(g.lb_endpoints) for a in assignments.values() for g in a.endpoints) == 10_000
