"""Control-path cost of the Consul compiler: Consul state → MeshSnapshot → request-path state.

    python bench/consul_compile.py [--services 1000] [--instances 10]

Builds a ConsulState in memory (every service http, one in ten with a
resolver with two bexpr subsets and a 90/10 splitter), then prints the best of
5 runs of: a cold compile (nothing reused), MeshState over the result, and a
recompile after one instance's health flip (the other services' lists
unchanged, as the Consul source keeps them). No Consul and no network: this is
the compiler alone; bench/consul_sync.py measures the whole loop.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshlib.config.model import WorkloadIdentity
from meshlib.discovery.consul import compile as consul_compile
from meshlib.discovery.consul import state as consul_state
from meshlib.discovery.consul.state import ConsulState
from meshlib.mesh_state import MeshState
from tests.unit.consul.consul_data import health_entry


def best_of(runs: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def make_state(services: int, instances: int) -> ConsulState:
    health = {
        f"svc{i}": [health_entry(f"svc{i}", f"10.{i // 250}.{i % 250}.{j}", 8080,
                                 meta={"version": "v1" if j % 2 else "v2"}) for j in range(instances)]
        for i in range(services)
    }
    entries: dict[str, list[dict[str, Any]]] = {
        "service-defaults": [{"Kind": "service-defaults", "Name": f"svc{i}", "Protocol": "http"}
                             for i in range(services)],
        "service-resolver": [{"Kind": "service-resolver", "Name": f"svc{i}", "Subsets": {
            "v1": {"Filter": "Service.Meta.version == v1"}, "v2": {"Filter": "Service.Meta.version == v2"}}}
            for i in range(0, services, 10)],
        "service-splitter": [{"Kind": "service-splitter", "Name": f"svc{i}", "Splits": [
            {"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}]}
            for i in range(0, services, 10)],
    }
    return ConsulState("dc1", health, entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=10)
    args = parser.parse_args()
    state = make_state(args.services, args.instances)
    workload = WorkloadIdentity()

    def cold() -> None:
        consul_compile._INSTANCES.clear()
        consul_state._DIGESTS.clear()
        consul_compile._LAST_CHAINS = consul_compile._ChainMemo()
        state.version()
        consul_compile.compile_consul(state, workload)

    snapshot, problems = consul_compile.compile_consul(state, workload)
    assert not problems, problems
    flips = 0

    def flip() -> None:
        nonlocal flips
        flips += 1
        services = dict(state.services)
        first = services["svc5"]
        status = "critical" if flips % 2 else "passing"
        services["svc5"] = [health_entry("svc5", "10.0.5.0", 8080, checks=(status,)), *first[1:]]
        changed = ConsulState(state.datacenter, services, state.config_entries)
        changed.version()
        MeshState(consul_compile.compile_consul(changed, workload)[0])

    endpoints = sum(len(c.endpoints) for c in snapshot.clusters.values())
    print(f"python {platform.python_version()} on {os.cpu_count()} CPU(s); {args.services} services × "
          f"{args.instances} instances → {len(snapshot.clusters)} clusters, {endpoints} endpoints")
    print(f"cold compile (version + chains + clusters + routes): {best_of(5, cold) * 1000:8.1f} ms")
    build_state = best_of(5, lambda: MeshState(snapshot))
    print(f"MeshState over it:                                 {build_state * 1000:8.1f} ms")
    print(f"one health flip → new MeshState:                   {best_of(5, flip) * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
