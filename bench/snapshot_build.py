"""Control-path cost at scale: 10,000 endpoints from YAML to a snapshot, and to xDS for each client kind.

    python bench/snapshot_build.py

Prints the best of 5 runs of: compiling Istio YAML (100 services × 100
endpoints) into a MeshSnapshot, building the request-path state (route table,
balancers), and encoding xDS resources for each client kind. Target
(performance.md): a 10,000-endpoint snapshot builds in ≤ 200 ms.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshlib.config.compile import compile_snapshot
from meshlib.config.files import read_resources
from meshlib.mesh_state import MeshState
from meshlib.xds import ClientKind, encode_resources
from tests.unit.xds.helpers import big_snapshot


def best_of(runs: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def big_yaml(path: Path) -> Path:
    docs = []
    for s in range(100):
        endpoints = "\n".join(
            f"  - {{address: 10.{s // 250}.{s % 250}.{e}, labels: {{v: v{e % 2}}}}}" for e in range(100)
        )
        docs.append(
            f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s{s}}}\nspec:\n"
            f"  hosts: [s{s}.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n"
            f"  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints:\n{endpoints}\n"
        )
    path.write_text("---\n".join(docs))
    return path


def main() -> None:
    import tempfile

    print(f"machine: {os.cpu_count()} cpu(s), Python {platform.python_version()}; best of 5")
    with tempfile.TemporaryDirectory() as tmp:
        resources, problems = read_resources([big_yaml(Path(tmp) / "big.yaml")])
        assert not problems, problems
        parse = best_of(3, lambda: read_resources([Path(tmp) / "big.yaml"]))
    compile_s = best_of(5, lambda: compile_snapshot(resources))
    snapshot = compile_snapshot(resources)
    state_s = best_of(5, lambda: MeshState(snapshot))
    print(f"  YAML parse (PyYAML)                {parse * 1000:8.1f} ms")
    print(f"  compile → MeshSnapshot             {compile_s * 1000:8.1f} ms   (target ≤ 200 ms)")
    print(f"  MeshState (route table, balancers) {state_s * 1000:8.1f} ms")
    shaped = big_snapshot()
    for kind in ClientKind:
        encode_s = best_of(5, lambda kind=kind: encode_resources(shaped, kind))  # type: ignore[misc]
        print(f"  encode xDS for {kind.value:<18}  {encode_s * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
