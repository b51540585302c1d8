"""How the bookinfo app behaves when its dependencies misbehave, with faults injected inside the mesh.

Copy this directory to start your own: ``pytest`` here runs it (meshlib's pytest plugin is
installed with meshlib; ``pytest.ini`` points the ``mesh`` fixture at ``mesh/``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from bookinfo import product_page, ratings, reviews_handler

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def http(mesh) -> AsyncIterator[aiohttp.ClientSession]:
    async with mesh.session() as session:
        yield session


@pytest_asyncio.fixture
async def bookinfo(mesh_service, http):
    """reviews and two ratings replicas, registered in the test's mesh."""
    await mesh_service("reviews", reviews_handler(http), version="v2")
    return await mesh_service("ratings", ratings, version="v1", replicas=2)


async def test_a_slow_ratings_service_hits_the_reviews_timeout(bookinfo, http, mesh_faults):
    # Istio's bookinfo "delay" task: ratings answers after 1 s, productpage gives reviews 500 ms.
    slow = mesh_faults.delay("ratings", 1.0)
    page = await product_page(http)
    assert page == {"reviews": None, "status": 504, "flag": "UT"}
    assert slow.injected == 1
    assert mesh_faults.stats_delta("reviews")["upstream_rq_timeout"] == 1


@pytest.mark.mesh_faults(seed=3)  # seeded draws: this exact run replays (some seeds fail 5 tries in a row)
async def test_half_of_ratings_answers_failing_are_absorbed_by_retries(bookinfo, http, mesh_faults):
    # An upstream fault (not a route abort: Istio never retries those) — half of the attempts get 503.
    flaky = mesh_faults.upstream("ratings", percent=50).status(503)
    for _ in range(20):
        page = await product_page(http)
        assert page["reviews"] == {"review": "An extremely entertaining play", "stars": 5}
    assert 0 < flaky.injected < flaky.seen
    assert mesh_faults.stats_delta("ratings")["upstream_rq_retry"] == flaky.injected


async def test_a_failing_ratings_host_is_ejected(bookinfo, http, mesh, mesh_faults):
    bad_host = bookinfo.endpoints[0]
    mesh_faults.upstream("ratings", endpoint=bad_host).status(500)
    for _ in range(10):
        assert (await product_page(http))["reviews"]["stars"] == 5  # retries land on the good host
    delta = mesh_faults.stats_delta("ratings")
    assert delta["outlier_detection.ejections_enforced_total"] == 1
    assert bad_host in mesh.stats()["clusters"]["outbound|9080||ratings.default.svc.cluster.local"]["ejected_hosts"]
    attempts = mesh_faults.attempts("ratings")
    assert [a.status for a in attempts if a.host == bad_host] == [500, 500, 500]  # then never tried again


async def test_a_saturated_details_service_overflows_with_uo(mesh_service, http, mesh_faults):
    await mesh_service("details")
    mesh_faults.upstream("details").latency(0.3)  # each request holds the only connection for 0.3 s

    async def get() -> tuple[int, str | None]:
        async with http.get("http://details:9080/details/0") as resp:
            return resp.status, resp.headers.get("x-meshlib-local-reply")

    answers = sorted(await asyncio.gather(*(get() for _ in range(4))), key=str)
    assert answers == [(200, None), (200, None), (503, "UO"), (503, "UO")]  # one in flight, one pending
    assert mesh_faults.stats_delta("details")["upstream_rq_pending_overflow"] == 2
