"""Shared fixtures for the xDS translation tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from meshlib.config import load_snapshot
from meshlib.config.model import (
    Cluster,
    Endpoint,
    Labels,
    Locality,
    MeshSnapshot,
    RouteConfiguration,
    Service,
    ServicePort,
    cluster_name,
)

FIXTURE = Path(__file__).parent / "fixtures" / "rich_mesh.yaml"


def rich_snapshot() -> MeshSnapshot:
    return load_snapshot([FIXTURE])


def without_inert_retries(configs: Mapping[str, RouteConfiguration]) -> dict[str, RouteConfiguration]:
    """Redirect / direct-response routes never retry; Envoy has no retry policy for them."""
    out = {}
    for name, config in configs.items():
        vhosts = tuple(
            replace(
                vhost,
                routes=tuple(r if r.destinations else replace(r, retry=None) for r in vhost.routes),
            )
            for vhost in config.virtual_hosts
        )
        out[name] = replace(config, virtual_hosts=vhosts)
    return out


def big_snapshot(services: int = 100, per_service: int = 100) -> MeshSnapshot:
    """``services`` services with ``per_service`` labelled endpoints each, over 3 localities."""
    clusters = {}
    registry = {}
    localities = (Locality("us-east", "a"), Locality("us-east", "b"), Locality("eu-west", "a"))
    for s in range(services):
        fqdn = f"svc{s}.default.svc.cluster.local"
        endpoints = tuple(
            Endpoint(
                f"10.{s // 256}.{s % 256}.{e}",
                8080,
                weight=1 + e % 3,
                labels=Labels({"app": f"svc{s}", "version": f"v{e % 2}"}),
                locality=localities[e % 3],
            )
            for e in range(per_service)
        )
        name = cluster_name(8080, "", fqdn)
        clusters[name] = Cluster(name, fqdn, 8080, "", endpoints)
        registry[fqdn] = Service(fqdn, "default", (ServicePort(8080, "HTTP", "http"),), location="MESH_INTERNAL")
    return MeshSnapshot(version="big", services=MappingProxyType(registry), clusters=MappingProxyType(clusters))
