"""Per-pick cost of ClusterBalancer.pick, steady state (all hosts healthy).

Prints microseconds per pick for each policy with 10 and 1000 hosts, plus a
baseline (one ``rng.random()`` call and indexing) measured in the same run so
numbers from different machines compare as ratios. The budget for route match
+ weighted pick + LB pick together is 5 µs on a slow 2-core machine; the LB
share should stay around 1-2 µs.

Run: python bench/decision_cost_lb.py [--number N]
"""

from __future__ import annotations

import argparse
import random
import time
import timeit

from meshlib.balancing import ClusterBalancer, PickContext
from meshlib.config.model import Cluster, Endpoint, LbKind, LbPolicy, Locality, TrafficPolicy
from meshlib.host_stats import HostStatsTable


def _cluster(kind: LbKind, hosts: int, weighted: bool) -> Cluster:
    endpoints = tuple(
        Endpoint(f"10.0.{i // 250}.{i % 250 + 1}", 8080, weight=(1 + i % 3) if weighted else 1)
        for i in range(hosts)
    )
    return Cluster(
        "outbound|8080||bench.svc", "bench.svc", 8080, "", endpoints, TrafficPolicy(lb=LbPolicy(kind=kind))
    )


def _measure(kind: LbKind, hosts: int, weighted: bool, number: int) -> tuple[float, float]:
    rng = random.Random(1)
    stats = HostStatsTable()
    t0 = time.perf_counter()
    balancer = ClusterBalancer(_cluster(kind, hosts, weighted), Locality("r", "z", "s"))
    ctx = PickContext(rng, 0.0, stats, None, 0, ())
    for i in range(hosts):  # some live load, so least request has something to compare
        stats.get(f"10.0.{i // 250}.{i % 250 + 1}:8080", 0.0).active_requests = i % 4
    balancer.pick(ctx)  # builds the plan and picker (control-path cost, reported apart)
    build_ms = (time.perf_counter() - t0) * 1000
    hashing = kind in (LbKind.RING_HASH, LbKind.MAGLEV)
    if hashing:
        ctx.hash_key = 0x9E3779B97F4A7C15
    pick = balancer.pick
    best = min(timeit.repeat(lambda: pick(ctx), number=number, repeat=5))
    return best / number * 1e6, build_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=100_000)
    args = parser.parse_args()
    rng = random.Random(1)
    hosts10 = list(range(10))
    baseline = min(timeit.repeat(lambda: hosts10[int(rng.random() * 10)], number=args.number, repeat=5))
    base_us = baseline / args.number * 1e6
    print(f"baseline (rng.random + index): {base_us:.3f} µs")
    print(f"{'policy':<26}{'hosts':>6}{'µs/pick':>10}{'× base':>9}{'build ms':>10}")
    cases = [
        (LbKind.ROUND_ROBIN, False),
        (LbKind.ROUND_ROBIN, True),
        (LbKind.LEAST_REQUEST, False),
        (LbKind.LEAST_REQUEST, True),
        (LbKind.RANDOM, False),
        (LbKind.PEAK_EWMA, False),
        (LbKind.RING_HASH, False),
        (LbKind.MAGLEV, False),
    ]
    for kind, weighted in cases:
        for hosts in (10, 1000):
            us, build_ms = _measure(kind, hosts, weighted, args.number)
            name = kind.value + (" (weighted)" if weighted else "")
            print(f"{name:<26}{hosts:>6}{us:>10.3f}{us / base_us:>9.1f}{build_ms:>10.1f}")


if __name__ == "__main__":
    main()
