"""Builders for Consul health entries and config entries, shaped as the HTTP API returns them."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from meshlib.config.model import Labels, WorkloadIdentity
from meshlib.discovery.consul.compile import compile_consul
from meshlib.discovery.consul.state import ConsulState
from meshlib.errors import ConfigProblem
from meshlib.explain import explain
from meshlib.mesh_state import MeshState


def health_entry(
    service: str,
    address: str,
    port: int,
    *,
    instance_id: str | None = None,
    node: str = "node-1",
    node_address: str = "10.9.9.9",
    meta: Mapping[str, str] | None = None,
    tags: Sequence[str] = (),
    checks: Sequence[str] = ("passing",),
    node_checks: Sequence[str] = ("passing",),
    weights: Mapping[str, int] | None = None,
    extra_checks: Sequence[Mapping[str, Any]] = (),
    locality: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One ``/v1/health/service/NAME`` entry (Node, Service, Checks) as Consul returns it."""
    sid = instance_id or f"{service}-{address}-{port}"
    svc: dict[str, Any] = {
        "ID": sid, "Service": service, "Tags": list(tags), "Address": address, "Port": port,
        "Meta": dict(meta or {}), "EnableTagOverride": False, "Namespace": "default",
        "CreateIndex": 10, "ModifyIndex": 10,
    }
    if weights is not None:
        svc["Weights"] = dict(weights)
    node_entry: dict[str, Any] = {"ID": "", "Node": node, "Address": node_address, "Datacenter": "dc1",
                                  "TaggedAddresses": {"lan": node_address, "wan": node_address}, "Meta": {}}
    if locality is not None:
        node_entry["Locality"] = dict(locality)
    all_checks: list[dict[str, Any]] = [
        {"Node": node, "CheckID": f"service:{sid}", "Name": f"Service '{service}' check", "Status": status,
         "ServiceID": sid, "ServiceName": service, "ServiceTags": list(tags)}
        for status in checks
    ]
    all_checks += [{"Node": node, "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": status,
                    "ServiceID": "", "ServiceName": "", "ServiceTags": []} for status in node_checks]
    all_checks += [dict(c) for c in extra_checks]
    return {"Node": node_entry, "Service": svc, "Checks": all_checks}


def state(
    services: Mapping[str, Sequence[Mapping[str, Any]]],
    *entries: Mapping[str, Any],
    datacenter: str = "dc1",
    remote: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]] | None = None,
) -> ConsulState:
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for entry in entries:
        by_kind.setdefault(str(entry["Kind"]), []).append(entry)
    return ConsulState(datacenter, dict(services), by_kind, dict(remote or {}))


def build(
    consul: ConsulState, *, caller: str = "", overlay: Sequence[Any] = ()
) -> tuple[MeshState, list[ConfigProblem]]:
    workload = WorkloadIdentity(namespace="default", labels=Labels(), name=caller)
    snapshot, problems = compile_consul(consul, workload, overlay=overlay)
    return MeshState(snapshot), problems


def ask(mesh: MeshState, url: str, headers: Mapping[str, str] | None = None, method: str = "GET") -> dict[str, Any]:
    return explain(mesh, method, url, dict(headers or {}), random.Random(1))


def messages(problems: Sequence[ConfigProblem]) -> list[str]:
    return [str(p) for p in problems]
