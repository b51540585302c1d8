"""The Sidecar resource applied to the calling workload, as istiod scopes a sidecar's configuration.

Which Sidecar applies (istiod's ``SidecarScope``): in the workload's
namespace, the first (file order) whose ``workloadSelector`` selects the
workload's labels; else the one without a selector there; else the one
without a selector in the root namespace (``istio-system``); else none, and
the workload sees everything.

What it changes:

- ``egress[].hosts`` (``namespace/host``; ``*`` any namespace, ``.`` the
  Sidecar's own, ``~`` none): only ServiceEntry hosts and VirtualServices
  (by their namespace and resolved hosts) that some entry matches are kept.
  A request to anything else is then outside the workload's registry:
  passthrough under ``ALLOW_ANY``, 502 under ``REGISTRY_ONLY``.
- ``outboundTrafficPolicy.mode`` becomes the snapshot's
  ``outbound_traffic_policy`` and overrides the mesh-wide setting.

>>> from meshlib.config.istio_types import Meta, SidecarSpec
>>> sidecar = SidecarSpec(Meta("f", 1, "Sidecar", "prod", "default"), None, (("prod", "*"), ("*", "*.example.com")))
>>> imports(sidecar, "prod", "reviews.prod.svc.cluster.local"), imports(sidecar, "dev", "api.example.com")
(True, True)
>>> imports(sidecar, "dev", "ratings.dev.svc.cluster.local")
False
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from meshlib.config.hosts import host_matches, resolve_host
from meshlib.config.istio_types import ServiceEntrySpec, SidecarSpec, VirtualServiceSpec
from meshlib.config.model import WorkloadIdentity

ROOT_NAMESPACE = "istio-system"


def sidecar_for(sidecars: Sequence[SidecarSpec], workload: WorkloadIdentity) -> SidecarSpec | None:
    """The Sidecar that applies to ``workload`` (see the module docstring), or None."""
    local = [s for s in sidecars if s.meta.namespace == workload.namespace]
    for sidecar in local:
        if sidecar.workload_selector is not None and workload.labels.selects(sidecar.workload_selector):
            return sidecar
    for candidates in (local, [s for s in sidecars if s.meta.namespace == ROOT_NAMESPACE]):
        for sidecar in candidates:
            if sidecar.workload_selector is None:
                return sidecar
    return None


def imports(sidecar: SidecarSpec, namespace: str, host: str) -> bool:
    """Does the Sidecar's egress import ``host`` defined in ``namespace``?"""
    for scope, pattern in sidecar.egress_hosts:
        if scope == "~":
            continue
        if scope not in ("*", namespace):
            continue
        if pattern == "*" or host_matches(pattern, host) or host == pattern:
            return True
    return False


def scope_resources(
    sidecar: SidecarSpec | None,
    entries: list[ServiceEntrySpec],
    services: list[VirtualServiceSpec],
) -> tuple[list[ServiceEntrySpec], list[VirtualServiceSpec]]:
    """The ServiceEntries (host by host) and VirtualServices the Sidecar's egress imports."""
    if sidecar is None or not sidecar.has_egress:
        return entries, services
    scoped_entries: list[ServiceEntrySpec] = []
    for entry in entries:
        hosts = tuple((h, line) for h, line in entry.hosts if imports(sidecar, entry.meta.namespace, h))
        if hosts:
            scoped_entries.append(replace(entry, hosts=hosts) if hosts != entry.hosts else entry)
    known = {h for entry in entries for h, _ in entry.hosts}
    scoped_services = [
        vs
        for vs in services
        if not vs.hosts  # delegates are reached through their parent
        or any(imports(sidecar, vs.meta.namespace, resolve_host(h, vs.meta.namespace, known)) for h, _ in vs.hosts)
    ]
    return scoped_entries, scoped_services
