"""Differential: the same Istio YAML through files and through xDS (our control plane) routes identically.

Mesh A reads the YAML (``Mesh.from_files``); mesh B gets it from a real
loopback ControlPlane serving ``encode_resources(snapshot, MESHLIB)`` via
``Mesh.from_xds``. For every request of a set (hosts × paths × headers) the
``explain`` output must be equal. Both meshes get the same seeded rng and
are asked in the same order, so weighted picks draw the same numbers.

One key is dropped, and only for local replies (redirect / direct response):
``retries``. The YAML model keeps the VirtualService's default retry policy
on such routes while Envoy's RouteAction-less routes carry none (the xDS
helpers' ``without_inert_retries`` notes the same); a local reply never
retries, so the difference cannot change behaviour.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import pytest

from meshlib.mesh import Mesh, default_config_path
from tests.integration.xds_client.conftest import plane, serve_yaml

pytestmark = pytest.mark.asyncio

RICH = Path(__file__).parents[2] / "unit" / "xds" / "fixtures" / "rich_mesh.yaml"

RICH_HOSTS = [
    "reviews:9080",
    "reviews.default.svc.cluster.local:9080",
    "reviews.default",
    "ratings:9080",
    "ratings.default.svc.cluster.local:9090",
    "details.shop.svc.cluster.local:8080",
    "details.shop:8080",
    "api.example.com",
    "unknown.example:1234",
]
RICH_PATHS = ["/reviews/1", "/Reviews/x?debug=1", "/old", "/healthz", "/grpc.Service/Get", "/r/12", "/other"]
BOOKINFO_HOSTS = ["reviews:9080", "ratings:9080", "details:9080", "productpage:9080", "reviews.default:9080"]
BOOKINFO_PATHS = ["/", "/reviews/1", "/ratings/2", "/details/0", "/productpage"]
HEADER_SETS: list[dict[str, str]] = [
    {},
    {"end-user": "jason", "x-trace": "1"},
    {"end-user": "jason", "x-trace": "1", "x-skip": "yes-please"},
    {"x-user": "alice", "cookie": "session=abc"},
]


def comparable(decision: dict[str, Any]) -> dict[str, Any]:
    if decision.get("action") == "local_reply":
        return {k: v for k, v in decision.items() if k != "retries"}
    return decision


def requests(hosts: list[str], paths: list[str]) -> list[tuple[str, str, dict[str, str]]]:
    out = []
    for (host, path, headers), method in zip(
        itertools.product(hosts, paths, HEADER_SETS), itertools.cycle(["GET", "POST", "GET", "DELETE"]), strict=False
    ):
        out.append((method, f"http://{host}{path}", headers))
    return out


CASES = {
    "rich": ([RICH], requests(RICH_HOSTS, RICH_PATHS)),
    "bookinfo": ([default_config_path()], requests(BOOKINFO_HOSTS, BOOKINFO_PATHS)),
}


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
@pytest.mark.parametrize("case", sorted(CASES))
async def test_xds_routes_exactly_like_files(case: str, protocol: str) -> None:
    paths, batch = CASES[case]
    assert len(batch) >= 30
    files = Mesh.from_files(*paths, rng=random.Random(7))
    async with plane() as cp:
        serve_yaml(cp, paths)
        xds = Mesh.from_xds(
            f"127.0.0.1:{cp.port}",
            node_id=f"diff-{case}",
            protocol=protocol,  # type: ignore[arg-type]
            rng=random.Random(7),
        )
        async with xds:
            assert xds.status()["connected"] is True
            assert xds.status()["publishes"] == 1
            assert len(xds.snapshot.clusters) == len(files.snapshot.clusters)
            mismatches = []
            for method, url, headers in batch:
                a = comparable(files.explain(method, url, headers))
                b = comparable(xds.explain(method, url, headers))
                if a != b:
                    mismatches.append((method, url, headers, a, b))
            assert not mismatches, mismatches[:3]
