"""Small builders for config tests: YAML text in, snapshot or problems out."""

from __future__ import annotations

import textwrap
from pathlib import Path

from meshlib.config import load_snapshot, validate_paths
from meshlib.config.model import MeshSnapshot, WorkloadIdentity

SERVICES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
spec:
  hosts: [reviews]
  location: MESH_INTERNAL
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, labels: {app: reviews, version: v1}}
  - {address: 10.0.0.2, labels: {app: reviews, version: v2}}
  - {address: 10.0.0.3, labels: {app: reviews, version: v3}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ratings
spec:
  hosts: [ratings]
  ports:
  - {number: 9080, name: http}
  resolution: STATIC
  endpoints:
  - {address: 10.0.1.1}
"""


def dedent(text: str) -> str:
    """Strip the common indent and the leading newline of a triple-quoted YAML block."""
    return textwrap.dedent(text).lstrip("\n")


def write(directory: Path, name: str, text: str) -> Path:
    """Write ``text`` (dedented) to ``directory/name``."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text))
    return path


def snapshot(
    directory: Path, text: str, *, services: bool = True, workload: WorkloadIdentity | None = None
) -> MeshSnapshot:
    """Compile ``text`` (plus the standard reviews/ratings services) from a temp directory."""
    write(directory, "mesh/a.yaml", (dedent(SERVICES) + "---\n" if services else "") + dedent(text))
    return load_snapshot([directory / "mesh"], workload or WorkloadIdentity())


def problems(directory: Path, text: str, *, services: bool = False) -> list[str]:
    """Every problem for ``text`` as formatted strings, file names relative to ``directory``."""
    body = (dedent(SERVICES) + "---\n" if services else "") + dedent(text)
    write(directory, "mesh/bad.yaml", body)
    prefix = str(directory) + "/"
    return [str(p).removeprefix(prefix) for p in validate_paths([directory / "mesh"])]
