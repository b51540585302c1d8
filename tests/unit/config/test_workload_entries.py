"""WorkloadEntry resources and ServiceEntry ``workloadSelector``: endpoints from selected workloads."""

from __future__ import annotations

from pathlib import Path

from meshlib.config import load_snapshot, validate_paths

SE = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm-svc, namespace: prod}
spec:
  hosts: [vm.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP, targetPort: 9000}]
  workloadSelector: {labels: {app: vm}}
"""


def _we(name: str, address: str, labels: str, namespace: str = "prod", extra: str = "") -> str:
    return (
        f"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n  address: {address}\n  labels: {{{labels}}}\n{extra}"
    )


def test_service_entry_selects_workload_entries_of_its_namespace(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text(
        "\n---\n".join(
            [
                SE,
                _we("vm-1", "10.1.0.1", "app: vm, version: v1", extra="  ports: {http: 9001}\n  locality: r/z\n"),
                _we("vm-2", "10.1.0.2", "app: vm, version: v2", extra="  weight: 3\n"),
                _we("other-app", "10.1.0.3", "app: db"),
                _we("other-namespace", "10.1.0.4", "app: vm", namespace="dev"),
            ]
        )
    )
    assert validate_paths([tmp_path]) == []
    snapshot = load_snapshot([tmp_path])
    cluster = snapshot.clusters["outbound|8080||vm.example.com"]
    endpoints = {(e.address, e.port, e.weight) for e in cluster.endpoints}
    assert endpoints == {("10.1.0.1", 9001, 1), ("10.1.0.2", 9000, 3)}
    assert {e.labels.get("version") for e in cluster.endpoints} == {"v1", "v2"}


def test_metadata_labels_count_too(tmp_path: Path) -> None:
    we = _we("vm-1", "10.1.0.1", "version: v1").replace("namespace: prod}", "namespace: prod, labels: {app: vm}}")
    (tmp_path / "mesh.yaml").write_text(SE + "---\n" + we)
    cluster = load_snapshot([tmp_path]).clusters["outbound|8080||vm.example.com"]
    assert [e.address for e in cluster.endpoints] == ["10.1.0.1"]


def test_workload_entry_validation(tmp_path: Path) -> None:
    (tmp_path / "we.yaml").write_text(
        _we("bad", "not_a_host!", "app: vm", extra="  ports: {HTTP: 80, http: 70000}\n  nonsense: 1\n")
    )
    messages = sorted(p.field + ": " + p.message for p in validate_paths([tmp_path]))
    assert messages == [
        'spec.address: invalid endpoint address "not_a_host!"',
        'spec.nonsense: unknown field "nonsense"',
        'spec.ports["HTTP"]: invalid port name "HTTP" (must be a DNS-1123 label)',
        'spec.ports["http"]: must be between 1 and 65535',
    ]
