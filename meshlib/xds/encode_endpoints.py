"""Model endpoints → Envoy ``ClusterLoadAssignment`` (EDS), shaped like istiod's.

One ``LocalityLbEndpoints`` per (locality, priority), in order of first
appearance, each with:

- ``locality`` always present, even when empty — gRPC NACKs a missing one
  ("field:endpoints[0].locality error:field not present");
- ``load_balancing_weight`` = the sum of its endpoint weights (gRPC requires a
  locality weight; istiod sends the same sum);
- ``priority`` from the model endpoint.

Each ``LbEndpoint`` carries a socket address and ``load_balancing_weight``
(Envoy requires ≥ 1, so a model weight of 0 is sent as 1). For MESHLIB clients
the endpoint labels travel in ``metadata.filter_metadata["meshlib"]["labels"]``
(istiod sends none: it does subset selection itself).

When ``client_locality`` is given (ENVOY / GRPC_PROXYLESS clients, whose
balancers do not know Istio's localityLbSetting), failover priorities and
``distribute`` weights are computed for that client the way istiod does, with
:func:`meshlib.balancing.layout_endpoints`; meshlib clients compute them themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from meshlib.config.model import Endpoint, LbPolicy, Locality
from meshlib.xds.clients import ClientKind
from meshlib.xds.encode_common import MESHLIB_KEY

ClusterLoadAssignment = endpoint_pb2.ClusterLoadAssignment


def encode_load_assignment(
    cluster_name: str,
    endpoints: Sequence[Endpoint],
    client: ClientKind,
    *,
    lb: LbPolicy | None = None,
    client_locality: Locality | None = None,
) -> Any:
    """The EDS resource (or inline ``load_assignment``) of one cluster."""
    out = ClusterLoadAssignment(cluster_name=cluster_name)
    with_labels = client is ClientKind.MESHLIB
    label_cache: dict[Any, Any] = {}  # Labels → Metadata (copying a whole Metadata is the fastest way)

    groups: list[tuple[Locality, int, list[Endpoint], float | None]]
    if client_locality is not None and lb is not None and client is not ClientKind.MESHLIB and endpoints:
        groups = _client_layout(endpoints, lb, client_locality)
    else:
        index: dict[tuple[Locality, int], list[Endpoint]] = {}
        for ep in endpoints:
            key = (ep.locality, ep.priority)
            members = index.get(key)
            if members is None:
                members = index[key] = []
            members.append(ep)
        groups = [(loc, prio, members, None) for (loc, prio), members in index.items()]

    for locality, priority, members, group_weight in groups:
        lle = out.endpoints.add()
        loc = lle.locality
        loc.SetInParent()
        if locality.region:
            loc.region = locality.region
        if locality.zone:
            loc.zone = locality.zone
        if locality.subzone:
            loc.sub_zone = locality.subzone
        if priority:
            lle.priority = priority
        total = 0
        add = lle.lb_endpoints.add
        for ep in members:
            lb_ep = add()
            address = lb_ep.endpoint.address.socket_address
            address.address = ep.address
            address.port_value = ep.port
            weight = ep.weight if ep.weight > 0 else 1
            lb_ep.load_balancing_weight.value = weight
            total += weight
            if with_labels and ep.labels:
                labels = label_cache.get(ep.labels)
                if labels is None:
                    labels = label_cache[ep.labels] = base_pb2.Metadata()
                    labels.filter_metadata[MESHLIB_KEY].update({"labels": dict(ep.labels)})
                lb_ep.metadata.CopyFrom(labels)
        lle.load_balancing_weight.value = max(1, round(group_weight)) if group_weight is not None else total
    return out


def _client_layout(
    endpoints: Sequence[Endpoint], lb: LbPolicy, client_locality: Locality
) -> list[tuple[Locality, int, list[Endpoint], float | None]]:
    from meshlib.balancing import layout_endpoints

    layout = layout_endpoints(endpoints, lb, client_locality)
    groups: list[tuple[Locality, int, list[Endpoint], float | None]] = []
    for level in layout.levels:
        for group in level:
            members = [endpoints[i] for i in group.members]
            groups.append((group.locality, group.priority, members, group.weight))
    return groups
