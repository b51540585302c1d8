"""Client memory with 10,000 endpoints in the snapshot (target ≤ 50 MB, performance.md).

    python bench/client_memory.py

Builds a mesh whose snapshot holds 100 services × 100 endpoints (plus one
subset cluster per service), compiles the request-path state, touches every
host's runtime stats, and prints the growth of the process's resident set and
of Python-allocated memory (tracemalloc) over an empty baseline.
"""

from __future__ import annotations

import gc
import os
import platform
import resource
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def main() -> None:
    import meshlib  # noqa: F401 - import cost is part of the baseline, not of the snapshot
    from meshlib.mesh import Mesh
    from tests.unit.xds.helpers import big_snapshot

    gc.collect()
    before_rss = rss_mb()
    tracemalloc.start()
    snapshot = big_snapshot()
    mesh = Mesh(snapshot)
    for cluster in snapshot.clusters.values():
        for endpoint in cluster.endpoints:
            mesh.host_stats.get(endpoint.key, 0.0)
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    endpoints = sum(len(c.endpoints) for c in snapshot.clusters.values())
    print(f"machine: {os.cpu_count()} cpu(s), Python {platform.python_version()}")
    print(f"clusters {len(snapshot.clusters)}, endpoint entries {endpoints}, hosts {len(mesh.host_stats)}")
    print(f"  Python-allocated (tracemalloc): {current / 2**20:6.1f} MB (peak {peak / 2**20:.1f} MB)")
    print(f"  resident set growth:            {rss_mb() - before_rss:6.1f} MB   (target ≤ 50 MB)")


if __name__ == "__main__":
    main()
