"""Envoy ``ClusterLoadAssignment`` (EDS, or a cluster's inline ``load_assignment``) → model endpoints.

Each ``LbEndpoint`` becomes an :class:`Endpoint` with the locality and
priority of its ``LocalityLbEndpoints``; weight = ``load_balancing_weight``
(1 when unset); labels from ``filter_metadata["meshlib"]["labels"]`` (istiod
sends none). Endpoints whose ``health_status`` is UNHEALTHY, DRAINING or
TIMEOUT are left out, as Envoy excludes them from load balancing.

Lossy: the locality ``load_balancing_weight`` (meshlib weighs a locality by
the sum of its endpoint weights), ``overprovisioning_factor`` and
``drop_overloads`` are ignored. Rejected: endpoints without a socket address
(pipes, internal addresses, LEDS collections) and named ports.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import health_check_pb2

from meshlib.config.model import EMPTY_LABELS, Endpoint, Labels, Locality
from meshlib.xds import type_urls
from meshlib.xds.decode_common import Where, metadata

_EXCLUDED = frozenset(
    {
        health_check_pb2.HealthStatus.UNHEALTHY,
        health_check_pb2.HealthStatus.DRAINING,
        health_check_pb2.HealthStatus.TIMEOUT,
    }
)


def decode_load_assignment(message: Any, name: str | None = None) -> tuple[Endpoint, ...]:
    """The endpoints of one ClusterLoadAssignment (``name``: the resource name, for errors)."""
    where = Where(type_urls.CLUSTER_LOAD_ASSIGNMENT, name or message.cluster_name)
    out: list[Endpoint] = []
    label_cache: dict[str, Labels] = {}
    for i, group in enumerate(message.endpoints):
        if group.HasField("leds_cluster_locality_config"):
            raise where.error(f"endpoints[{i}].leds_cluster_locality_config", "LEDS is not supported")
        loc = group.locality
        locality = Locality(loc.region, loc.zone, loc.sub_zone)
        priority = group.priority
        for j, lb_endpoint in enumerate(group.lb_endpoints):
            if lb_endpoint.health_status in _EXCLUDED:
                continue
            path = f"endpoints[{i}].lb_endpoints[{j}]"
            if lb_endpoint.WhichOneof("host_identifier") != "endpoint":
                raise where.error(path, "only inline endpoints are supported (no endpoint_name)")
            address = lb_endpoint.endpoint.address
            if address.WhichOneof("address") != "socket_address":
                raise where.error(f"{path}.endpoint.address", "only socket addresses are supported")
            socket = address.socket_address
            if socket.WhichOneof("port_specifier") != "port_value":
                raise where.error(f"{path}.endpoint.address.socket_address", "named ports are not supported")
            if not socket.address:
                raise where.error(f"{path}.endpoint.address.socket_address.address", "must not be empty")
            weight = lb_endpoint.load_balancing_weight.value if lb_endpoint.HasField("load_balancing_weight") else 1
            labels = EMPTY_LABELS
            if lb_endpoint.HasField("metadata"):
                raw = metadata(lb_endpoint).get("labels")
                if isinstance(raw, dict) and raw:
                    key = repr(sorted(raw.items()))
                    labels = label_cache.get(key) or label_cache.setdefault(
                        key, Labels({str(k): str(v) for k, v in raw.items()})
                    )
            out.append(Endpoint(socket.address, socket.port_value, weight, labels, locality, priority))
    return tuple(out)
