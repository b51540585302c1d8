"""The fault controller's pure parts: draws, matching, validation (no sockets, no event loop)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from meshlib.config.model import Cluster
from meshlib.request import RequestView
from meshlib.testing.fault_specs import check_match, draw, host_matches, request_matches
from meshlib.testing.faults import MeshFaults, grpc_code

RATINGS_V1 = Cluster("outbound|9080|v1|ratings.default.svc.cluster.local", "ratings.default.svc.cluster.local", 9080,
                     "v1", ())


@pytest.fixture
def faults() -> Iterator[MeshFaults]:
    controller = MeshFaults(seed=5)
    yield controller
    controller.close(check_unused=False)


def test_draws_follow_the_percentage_and_replay_with_the_seed() -> None:
    rng_a, rng_b = random.Random(7), random.Random(7)
    a = [draw(30, rng_a) for _ in range(2000)]
    b = [draw(30, rng_b) for _ in range(2000)]
    assert a == b
    assert 500 <= sum(a) <= 700  # 30% of 2000, generously bounded
    rng = random.Random(1)
    assert all(draw(100, rng) for _ in range(100))
    assert not any(draw(0, rng) for _ in range(100))


def test_draws_of_100_percent_consume_no_randomness() -> None:
    rng = random.Random(3)
    state = rng.getstate()
    draw(100, rng)
    draw(0, rng)
    assert rng.getstate() == state


@pytest.mark.parametrize(("pattern", "expected"), [
    ("ratings", True), ("ratings.default", True), ("ratings.default.svc.cluster.local", True), ("*", True),
    ("rating", False), ("reviews", False), ("ratings.other", False),
])
def test_host_patterns(pattern: str, expected: bool) -> None:
    assert host_matches(pattern, RATINGS_V1) is expected


def test_request_matching() -> None:
    request = RequestView("GET", "ratings:9080", "/ratings/1?x=1", "http", {"end-user": "jason"}, {})
    assert request_matches({}, request)
    assert request_matches({"path_prefix": "/ratings", "method": "get", "headers": {"end-user": "jason"}}, request)
    assert request_matches({"path": "/ratings/1"}, request)  # the query is not part of the path
    assert not request_matches({"path_prefix": "/reviews"}, request)
    assert not request_matches({"method": "POST"}, request)
    assert not request_matches({"headers": {"end-user": "bob"}}, request)
    assert not request_matches({"path": "/ratings"}, None)


def test_match_keys_are_checked() -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['prefix'\]"):
        check_match({"prefix": "/x"})
    with pytest.raises(ValueError, match="headers must be a mapping"):
        check_match({"headers": ["end-user"]})


def test_declarations_are_validated(faults: MeshFaults) -> None:
    with pytest.raises(ValueError, match="exactly one of http_status= and grpc_status="):
        faults.abort("ratings")
    with pytest.raises(ValueError, match=r"percent must be within 0\.\.100"):
        faults.delay("ratings", 1.0, percent=150)
    with pytest.raises(ValueError, match="delay must be ≥ 0"):
        faults.delay("ratings", -1.0)
    with pytest.raises(ValueError, match="already refuses"):
        faults.upstream("ratings").refuse().reset()
    with pytest.raises(ValueError, match="times must be ≥ 1"):
        faults.upstream("ratings").status(503, times=0)
    with pytest.raises(ValueError, match="jitter"):
        faults.upstream("ratings").latency(0.1, jitter=0.5)
    with pytest.raises(ValueError, match="unknown gRPC status"):
        faults.abort("ratings", grpc_status="NOT_A_STATUS")


def test_grpc_status_spellings() -> None:
    grpc = pytest.importorskip("grpc")
    assert grpc_code("UNAVAILABLE") == grpc_code("unavailable") == grpc_code(grpc.StatusCode.UNAVAILABLE) == 14
    assert grpc_code(8) == 8


def test_unused_faults_are_reported_unless_optional_or_removed(faults: MeshFaults) -> None:
    unused = faults.abort("ratings", 503)
    faults.delay("reviews", 1.0, optional=True)
    with faults.upstream("details").reset() as scoped:
        pass
    assert scoped not in faults.upstream_faults  # removed when its block ended
    assert faults.close() == [unused, scoped]  # removed is not "used": it still matched nothing
