"""Loading 10,000 endpoints from Istio YAML, end to end: read + parse + validate + compile, never asserted.

    python bench/yaml_load.py [--services 100] [--endpoints 100] [--runs 5]

The file is 100 ServiceEntries × 100 endpoints (``bench/snapshot_build.py``'s
file). Printed, best of ``--runs`` (wall and this process's CPU time, which a
busy shared machine inflates less): PyYAML's own ``yaml.load_all`` with
libyaml's C loader (the floor for any PyYAML-based reader, no line marks),
meshlib's reader alone (libyaml's C parser and composer, line marks kept), the
reader + validation (``read_resources``, its parse cache cleared), then
+ cross-resource checks + ``compile_snapshot`` (``load_snapshot``: the figure
the target is about, ≤ 300 ms), and the request-path state
(``MeshState``: route table, balancers) built from it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshlib.config import files as config_files
from meshlib.config.files import load_snapshot, read_resources
from meshlib.config.gc_pause import gc_paused
from meshlib.config.yaml_nodes import parse_yaml
from meshlib.mesh_state import MeshState


def write_yaml(path: Path, services: int, endpoints: int) -> Path:
    docs = []
    for s in range(services):
        lines = "\n".join(
            f"  - {{address: 10.{s // 250}.{s % 250}.{e % 250}, labels: {{v: v{e % 2}}}}}" for e in range(endpoints)
        )
        docs.append(
            f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s{s}}}\nspec:\n"
            f"  hosts: [s{s}.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n"
            f"  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints:\n{lines}\n"
        )
    path.write_text("---\n".join(docs))
    return path


def best(runs: int, work: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of the fastest of ``runs`` runs."""
    wall, cpu = float("inf"), float("inf")
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        work()
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - started_cpu)
    return wall, cpu


def uncached(work: Callable[[], object]) -> Callable[[], object]:
    """``work`` with the reader's parse cache (by file content) emptied first: a real load."""
    def run() -> object:
        cache = getattr(config_files, "_PARSED", None)
        if cache is not None:
            cache.clear()
        return work()

    return run


def paused(work: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with gc_paused():
            return work()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--endpoints", type=int, default=100, help="per service")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    total = args.services * args.endpoints
    print(f"machine: nproc={os.cpu_count()} python={platform.python_version()} libyaml={yaml.__with_libyaml__}; "
          f"{total:,} endpoints ({args.services} ServiceEntries); best of {args.runs}, wall / CPU")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_yaml(Path(tmp) / "mesh.yaml", args.services, args.endpoints)
        text = path.read_text()
        resources, problems = read_resources([path])
        assert not [p for p in problems if not p.is_warning], problems[:3]
        snapshot = load_snapshot([path])
        rows = [
            ("yaml.load_all, CSafeLoader (no line marks)",
             lambda: list(yaml.load_all(text, Loader=yaml.CSafeLoader))),
            ("meshlib reader (C parser + composer, lines)", lambda: parse_yaml(text)),
            ("  the same, cyclic GC paused (as loads run)", paused(lambda: parse_yaml(text))),
            ("  + validation (read_resources)", uncached(lambda: read_resources([path]))),
            ("  + compile_snapshot (load_snapshot): target", uncached(lambda: load_snapshot([path]))),
            ("MeshState from the snapshot", lambda: MeshState(snapshot)),
        ]
        for name, work in rows:
            wall, cpu = best(args.runs, work)
            note = "   (target ≤ 300 ms)" if "target" in name else ""
            print(f"  {name.replace(': target', ''):46s} {wall * 1000:7.1f} ms / {cpu * 1000:7.1f} ms CPU{note}")
        del resources


if __name__ == "__main__":
    main()
