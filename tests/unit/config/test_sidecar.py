"""The Sidecar resource: which Sidecar applies to a workload, what its egress hosts import, its traffic policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlib.config import load_snapshot, validate_paths
from meshlib.config.model import Labels, WorkloadIdentity


def _se(name: str, namespace: str, host: str) -> str:
    return (
        f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n"
        "  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.0.0.1}]\n"
    )


def _sidecar(name: str, namespace: str, body: str) -> str:
    return (
        f"apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n{body}"
    )


MESH = "\n---\n".join(
    [
        _se("reviews", "prod", "reviews.prod.svc.cluster.local"),
        _se("ratings", "dev", "ratings.dev.svc.cluster.local"),
        _se("api", "ext", "api.example.com"),
        _sidecar("default", "prod", "  egress: [{hosts: [./*, '*/*.example.com']}]\n"
                 "  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"),
        _sidecar("canary", "prod", "  workloadSelector: {labels: {app: canary}}\n  egress: [{hosts: ['*/*']}]\n"),
        _sidecar("default", "istio-system", "  egress: [{hosts: [dev/*]}]\n"),
    ]
)


@pytest.mark.parametrize(
    ("namespace", "labels", "visible", "policy"),
    [
        ("prod", {}, {"reviews.prod.svc.cluster.local", "api.example.com"}, "REGISTRY_ONLY"),
        ("prod", {"app": "canary"}, {"reviews.prod.svc.cluster.local", "ratings.dev.svc.cluster.local",
                                     "api.example.com"}, ""),
        ("dev", {}, {"ratings.dev.svc.cluster.local"}, ""),  # the root namespace's default
    ],
    ids=["namespace-default", "selected-by-labels", "root-namespace-default"],
)
def test_sidecar_scopes_the_workloads_view(
    tmp_path: Path, namespace: str, labels: dict[str, str], visible: set[str], policy: str
) -> None:
    (tmp_path / "mesh.yaml").write_text(MESH)
    assert [p for p in validate_paths([tmp_path]) if not p.is_warning] == []
    snapshot = load_snapshot([tmp_path], WorkloadIdentity(namespace=namespace, labels=Labels(labels)))
    assert set(snapshot.services) == visible
    assert snapshot.outbound_traffic_policy == policy


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("  workloadSelector: {labels: {app: a}}\n", "sidecar: empty configuration provided"),
        ("  egress: [{hosts: [reviews]}]\n", 'host "reviews" must be of the form namespace/dnsName'),
        ("  egress: [{hosts: [prod/reviews]}]\n", "short names (non FQDN) are not allowed"),
        ("  egress: [{hosts: [Prod/*]}]\n", 'invalid namespace value "Prod"'),
        ("  egress: [{hosts: []}]\n", "egress listener must contain at least one host"),
        ("  egress: [{hosts: ['*/*']}, {port: {number: 80}, hosts: ['*/*']}]\n",
         "the egress listener with empty port should be the last listener in the list"),
        ("  outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: a.b}}\n",
         "egress_proxy must be set only with ALLOW_ANY"),
        ("  outboundTrafficPolicy: {mode: SOMETIMES}\n", 'unknown value "SOMETIMES"'),
    ],
)
def test_sidecar_validation(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "s.yaml").write_text(_sidecar("s", "prod", body))
    errors = [p.message for p in validate_paths([tmp_path]) if not p.is_warning]
    assert any(message in e for e in errors), errors


def test_ignored_sidecar_parts_are_warnings(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        _sidecar("s", "prod", "  ingress: [{port: {number: 9080, protocol: HTTP, name: http}, "
                 "defaultEndpoint: '127.0.0.1:8080'}]\n  egress: [{port: {number: 80}, hosts: ['*/*']}]\n")
    )
    problems = validate_paths([tmp_path])
    assert problems and all(p.is_warning for p in problems)
    assert any("meshlib ignores them" in p.message for p in problems)
