from __future__ import annotations

import random
from collections import Counter

import pytest

from meshlib.balancing import ClusterBalancer, PickContext
from meshlib.config.model import (
    Endpoint,
    HashPolicy,
    LbKind,
    LbPolicy,
    Locality,
    LocalityDistribute,
    LocalityLbSetting,
    Warmup,
)
from meshlib.host_stats import HostStatsTable
from meshlib.request import RequestView

from .helpers import CHI2_999, chi_square, cluster, ctx, endpoints

RR = LbPolicy(kind=LbKind.ROUND_ROBIN)


def _eject(stats: HostStatsTable, *eps: Endpoint) -> None:
    for ep in eps:
        stats.set_ejected(ep.key, True, 0.0)


def _counts(balancer: ClusterBalancer, c: PickContext, n: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        host = balancer.pick(c)
        assert host is not None
        counts[host.key] += 1
    return counts


def test_empty_cluster_has_no_host() -> None:
    assert ClusterBalancer(cluster(()), Locality()).pick(ctx()) is None


def test_describe_is_policy_name() -> None:
    assert ClusterBalancer(cluster(endpoints(1)), Locality()).describe() == "LEAST_REQUEST"
    assert ClusterBalancer(cluster(endpoints(1), RR)).describe() == "ROUND_ROBIN"


def test_invalid_ring_sizes_rejected_at_build() -> None:
    lb = LbPolicy(kind=LbKind.RING_HASH, ring_min_size=10, ring_max_size=5)
    with pytest.raises(ValueError, match="minimum_ring_size"):
        ClusterBalancer(cluster(endpoints(2), lb))


@pytest.mark.parametrize("kind", list(LbKind))
def test_every_policy_picks_only_available_hosts(kind: LbKind) -> None:
    eps = endpoints(5)
    stats = HostStatsTable()
    _eject(stats, eps[0], eps[3])  # 60% available: above the 50% panic threshold
    balancer = ClusterBalancer(cluster(eps, LbPolicy(kind=kind, maglev_table_size=251)))
    c = ctx(2, stats=stats)
    picked = {balancer.pick(c).key for _ in range(300)}  # type: ignore[union-attr]
    assert picked <= {eps[1].key, eps[2].key, eps[4].key}
    assert len(picked) >= 2


def test_round_robin_skips_ejected_and_resumes() -> None:
    eps = endpoints(3)
    stats = HostStatsTable()
    balancer = ClusterBalancer(cluster(eps, RR))
    c = ctx(stats=stats)
    assert set(_counts(balancer, c, 3)) == {e.key for e in eps}
    _eject(stats, eps[1])  # 2/3 available, above panic
    assert set(_counts(balancer, c, 30)) == {eps[0].key, eps[2].key}
    stats.set_ejected(eps[1].key, False, 1.0)
    assert _counts(balancer, c, 30) == {e.key: 10 for e in eps}


def test_unrelated_health_change_keeps_picker_state() -> None:
    eps = endpoints(4)
    stats = HostStatsTable()
    balancer = ClusterBalancer(cluster(eps, RR))
    c = ctx(stats=stats)
    first = [balancer.pick(c) for _ in range(2)]
    stats.set_ejected("192.168.9.9:1", True, 0.0)  # another cluster's host: version moves
    after = [balancer.pick(c) for _ in range(2)]
    idx = [eps.index(h) for h in first + after]
    assert idx == [(idx[0] + i) % 4 for i in range(4)]  # cursor carried on, not reset


def test_panic_below_threshold_uses_all_hosts() -> None:
    eps = endpoints(10)
    stats = HostStatsTable()
    _eject(stats, *eps[:6])  # 40% available < 50%
    balancer = ClusterBalancer(cluster(eps, RR))
    counts = _counts(balancer, ctx(stats=stats), 100)
    assert counts == {e.key: 10 for e in eps}  # ejected hosts included, evenly


def test_no_panic_at_threshold() -> None:
    eps = endpoints(10)
    stats = HostStatsTable()
    _eject(stats, *eps[:5])  # exactly 50%
    balancer = ClusterBalancer(cluster(eps, RR))
    assert set(_counts(balancer, ctx(stats=stats), 100)) == {e.key for e in eps[5:]}


def test_all_ejected_threshold_zero_is_no_host() -> None:
    eps = endpoints(3)
    stats = HostStatsTable()
    _eject(stats, *eps)
    lb = LbPolicy(kind=LbKind.ROUND_ROBIN, panic_threshold_percent=0.0)
    assert ClusterBalancer(cluster(eps, lb)).pick(ctx(stats=stats)) is None


def test_all_ejected_threshold_positive_panics_on_p0() -> None:
    p0 = endpoints(2)
    p1 = endpoints(2, priority=1, base=10)
    stats = HostStatsTable()
    _eject(stats, *p0, *p1)
    balancer = ClusterBalancer(cluster(p0 + p1, RR))
    assert set(_counts(balancer, ctx(stats=stats), 20)) == {e.key for e in p0}


def test_priority_failover_split_follows_loads() -> None:
    p0 = endpoints(10)
    p1 = endpoints(10, priority=1, base=20)
    stats = HostStatsTable()
    _eject(stats, *p0[:5])  # P0 5/10 → health 70, P1 100 → loads 70 / 30
    balancer = ClusterBalancer(cluster(p0 + p1, RR))
    counts = _counts(balancer, ctx(8, stats=stats), 20_000)
    to_p0 = sum(counts[e.key] for e in p0) / 20_000
    assert to_p0 == pytest.approx(0.70, abs=0.015)
    assert not any(counts[e.key] for e in p0[:5])


def test_priority_p0_keeps_all_traffic_while_healthy_enough() -> None:
    p0 = endpoints(10)
    p1 = endpoints(10, priority=1, base=20)
    stats = HostStatsTable()
    _eject(stats, *p0[:2])  # 80% → health 100
    balancer = ClusterBalancer(cluster(p0 + p1, RR))
    counts = _counts(balancer, ctx(stats=stats), 1000)
    assert set(counts) == {e.key for e in p0[2:]}


def test_previous_host_avoidance() -> None:
    eps = endpoints(3)
    balancer = ClusterBalancer(cluster(eps, RR))
    c = ctx(avoid={eps[0].key, eps[1].key})
    assert all(balancer.pick(c) is eps[2] for _ in range(20))  # the cursor passes the others


def test_previous_host_avoidance_random_repicks() -> None:
    # 1 initial pick + 5 re-picks, each avoided with probability 2/3: fails (2/3)^6 ≈ 8.8%.
    eps = endpoints(3)
    balancer = ClusterBalancer(cluster(eps, LbPolicy(kind=LbKind.RANDOM)))
    c = ctx(12, avoid={eps[0].key, eps[1].key})
    hits = sum(balancer.pick(c) is eps[2] for _ in range(5000)) / 5000
    assert hits == pytest.approx(1 - (2 / 3) ** 6, abs=0.015)


def test_previous_host_avoidance_gives_up_after_five_repicks() -> None:
    eps = endpoints(2)
    balancer = ClusterBalancer(cluster(eps, RR))
    c = ctx(avoid={e.key for e in eps})
    host = balancer.pick(c)
    assert host in eps  # accepted the last pick rather than failing
    assert c.attempt == 0  # restored


def test_avoidance_with_ring_hash_moves_along_the_ring() -> None:
    eps = endpoints(5)
    lb = LbPolicy(kind=LbKind.RING_HASH, hash_policies=(HashPolicy("header", "x-user"),))
    balancer = ClusterBalancer(cluster(eps, lb))
    request = RequestView("GET", "svc", "/", headers={"x-user": "alice"})
    key = balancer.request_hash(request)
    assert key is not None
    first = balancer.pick(ctx(hash_key=key))
    assert first is not None
    assert balancer.pick(ctx(7, hash_key=key)) is first  # sticky
    retry = balancer.pick(ctx(hash_key=key, attempt=1, avoid={first.key}))
    assert retry is not None
    assert retry is not first


def test_request_hash_only_for_hash_policies() -> None:
    request = RequestView("GET", "svc", "/", headers={"x-user": "alice"})
    lb = LbPolicy(kind=LbKind.ROUND_ROBIN, hash_policies=(HashPolicy("header", "x-user"),))
    assert ClusterBalancer(cluster(endpoints(2), lb)).request_hash(request) is None


def test_least_request_balancer_prefers_idle_hosts() -> None:
    eps = endpoints(4)
    stats = HostStatsTable()
    for e in eps[:2]:
        stats.get(e.key, 0.0).active_requests = 5
    balancer = ClusterBalancer(cluster(eps))
    counts = _counts(balancer, ctx(3, stats=stats), 10_000)
    busy = sum(counts[e.key] for e in eps[:2]) / 10_000
    assert busy == pytest.approx(0.25, abs=0.02)  # both draws busy: (1/2)^2


def test_least_request_balancer_uniform_when_equal() -> None:
    eps = endpoints(10)
    counts = _counts(ClusterBalancer(cluster(eps)), ctx(5), 20_000)
    assert chi_square(counts, {e.key: 2000.0 for e in eps}) < CHI2_999[9]


# ---------------------------------------------------------------- locality


CLIENT = Locality("us-east", "a", "s1")


def test_locality_failover_prefers_client_zone_then_fails_over() -> None:
    local = endpoints(2, locality=CLIENT)
    near = endpoints(2, locality=Locality("us-east", "b", "s1"), base=10)
    far = endpoints(2, locality=Locality("eu-west", "x", "y"), base=20)
    stats = HostStatsTable()
    lb = LbPolicy(kind=LbKind.ROUND_ROBIN, failover_enabled=True)
    balancer = ClusterBalancer(cluster(local + near + far, lb), CLIENT)
    c = ctx(stats=stats)
    assert set(_counts(balancer, c, 100)) == {e.key for e in local}
    _eject(stats, *local)
    assert set(_counts(balancer, c, 100)) == {e.key for e in near}
    _eject(stats, *near)
    assert set(_counts(balancer, c, 100)) == {e.key for e in far}


def test_distribute_splits_traffic_by_locality_weight() -> None:
    zone_a = endpoints(2, locality=CLIENT)
    zone_b = endpoints(3, locality=Locality("us-east", "b", "s1"), base=10)
    other = endpoints(2, locality=Locality("eu-west", "x", "y"), base=20)
    lb = LbPolicy(
        kind=LbKind.ROUND_ROBIN,
        locality=LocalityLbSetting(
            distribute=(LocalityDistribute("us-east/a/*", {"us-east/a/*": 80, "us-east/b/*": 20}),)
        ),
    )
    balancer = ClusterBalancer(cluster(zone_a + zone_b + other, lb), CLIENT)
    counts = _counts(balancer, ctx(), 1000)
    assert sum(counts[e.key] for e in zone_a) == 800  # EDF over 80 : 20, exact
    assert sum(counts[e.key] for e in zone_b) == 200
    assert not any(counts[e.key] for e in other)


def test_locality_weight_scales_with_availability() -> None:
    zone_a = endpoints(10, locality=CLIENT)
    zone_b = endpoints(10, locality=Locality("us-east", "b", "s1"), base=20)
    lb = LbPolicy(
        kind=LbKind.ROUND_ROBIN,
        locality=LocalityLbSetting(
            distribute=(LocalityDistribute("*", {"us-east/a/*": 50, "us-east/b/*": 50}),)
        ),
    )
    stats = HostStatsTable()
    _eject(stats, *zone_a[:5])  # zone a: 50% up → eff 50 * 0.7 = 35 vs 50 (level 75% up: no panic)
    balancer = ClusterBalancer(cluster(zone_a + zone_b, lb), CLIENT)
    counts = _counts(balancer, ctx(stats=stats), 8500)
    assert sum(counts[e.key] for e in zone_a) == pytest.approx(3500, abs=2)


# ---------------------------------------------------------------- warmup


def test_warmup_ramps_new_host() -> None:
    eps = endpoints(3)
    stats = HostStatsTable()
    stats.get(eps[0].key, 0.0)
    stats.get(eps[1].key, 0.0)
    stats.get(eps[2].key, 100.0)  # first seen later
    lb = LbPolicy(kind=LbKind.ROUND_ROBIN, warmup=Warmup(60.0))
    balancer = ClusterBalancer(cluster(eps, lb))
    c = ctx(stats=stats, now=110.0)  # new host: age 10 → factor 1/6
    counts = _counts(balancer, c, 1300)
    assert counts[eps[2].key] == pytest.approx(1300 * (1 / 6) / (2 + 1 / 6), abs=2)
    c.now = 170.0  # out of the window: equal shares again (rebuild triggered by time)
    counts = _counts(balancer, c, 300)
    assert counts == {e.key: 100 for e in eps}


def test_warmup_ignored_for_random() -> None:
    eps = endpoints(2)
    stats = HostStatsTable()
    lb = LbPolicy(kind=LbKind.RANDOM, warmup=Warmup(60.0))
    balancer = ClusterBalancer(cluster(eps, lb))
    balancer.pick(ctx(stats=stats))
    assert len(stats) == 0  # no first_seen registration needed


def test_hash_based_priority_choice_is_sticky() -> None:
    p0 = endpoints(10)
    p1 = endpoints(10, priority=1, base=20)
    stats = HostStatsTable()
    _eject(stats, *p0[:5])
    lb = LbPolicy(kind=LbKind.MAGLEV, maglev_table_size=251)
    balancer = ClusterBalancer(cluster(p0 + p1, lb))
    for key in (3, 99, 12345):
        picks = {balancer.pick(PickContext(random.Random(s), 0.0, stats, key)) for s in range(10)}
        assert len(picks) == 1
