"""The mesh's configuration and runtime state as JSON-ready dicts, for the admin endpoints.

:func:`config_dump` follows the shape of Envoy's ``/config_dump`` (a list of
``configs``, one per resource kind, each tagged with an ``@type``), built from
meshlib's model rather than from protobuf: readable, not proto-exact.
:func:`clusters_view` and :func:`routes_view` are the summaries behind
``/clusters`` and ``/routes``; :func:`clusters_text` is the Envoy-like line
format of ``/clusters?format=text``; ``mesh.prometheus_text()`` renders
``mesh.stats()`` in the Prometheus text format.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any

from meshlib.config.model import Cluster, Labels, Locality, Route, RouteMatch, StringMatch
from meshlib.routing import destination_percents

if TYPE_CHECKING:
    from meshlib.mesh import Mesh

LISTENERS_DUMP = "type.googleapis.com/envoy.admin.v3.ListenersConfigDump"
CLUSTERS_DUMP = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"
ROUTES_DUMP = "type.googleapis.com/envoy.admin.v3.RoutesConfigDump"

__all__ = [
    "CLUSTERS_DUMP",
    "LISTENERS_DUMP",
    "ROUTES_DUMP",
    "clusters_text",
    "clusters_view",
    "config_dump",
    "match_summary",
    "plain",
    "routes_view",
]


# --------------------------------------------------------------------------- generic conversion


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data: dataclasses become dicts, tuples lists, enums their values.

    Infinite floats become ``None``; ``bytes`` are decoded (replacing invalid
    UTF-8); a dataclass field named ``from_`` is written ``from``.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Locality):
        return {"region": value.region, "zone": value.zone, "sub_zone": value.subzone}
    if isinstance(value, Labels):
        return dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name.rstrip("_"): plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.metadata.get("derived")
        }
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, tuple | list | set | frozenset):
        return [plain(v) for v in value]
    return str(value)


# --------------------------------------------------------------------------- /config_dump


def config_dump(mesh: Mesh) -> dict[str, Any]:
    """The active snapshot in Envoy's ``config_dump`` shape, plus meshlib's version and source status.

    ``configs`` holds a ``ListenersConfigDump``, a ``ClustersConfigDump`` and a
    ``RoutesConfigDump`` (in that order, as Envoy lists them); ``version``,
    ``status`` (:meth:`Mesh.status`), ``workload`` and ``services`` are meshlib's.
    """
    snapshot = mesh.snapshot
    version = snapshot.version
    listeners = {
        "@type": LISTENERS_DUMP,
        "version_info": version,
        "dynamic_listeners": [
            {
                "name": listener.name,
                "active_state": {
                    "version_info": version,
                    "listener": {
                        "name": listener.name,
                        "address": {"socket_address": {"address": "0.0.0.0", "port_value": listener.port}},
                        "rds": {"route_config_name": listener.route_config},
                    },
                },
            }
            for listener in snapshot.listeners.values()
        ],
    }
    clusters = {
        "@type": CLUSTERS_DUMP,
        "version_info": version,
        "dynamic_active_clusters": [
            {"version_info": version, "cluster": _cluster_dump(cluster)} for cluster in snapshot.clusters.values()
        ],
    }
    routes = {
        "@type": ROUTES_DUMP,
        "dynamic_route_configs": [
            {"version_info": version, "route_config": plain(config)} for config in snapshot.route_configs.values()
        ],
    }
    return {
        "version": version,
        "status": plain(mesh.status()),
        "workload": plain(snapshot.workload),
        "services": [plain(service) for service in snapshot.services.values()],
        "configs": [listeners, clusters, routes],
    }


def _cluster_dump(cluster: Cluster) -> dict[str, Any]:
    return {
        "name": cluster.name,
        "type": "EDS" if cluster.resolution == "STATIC" else cluster.resolution,
        "service": cluster.service,
        "port": cluster.port,
        "subset": cluster.subset,
        "lb_policy": cluster.policy.lb.kind.value,
        "policy": plain(cluster.policy),
        "load_assignment": {
            "cluster_name": cluster.name,
            "endpoints": [
                {
                    "locality": plain(e.locality),
                    "priority": e.priority,
                    "lb_endpoints": [
                        {
                            "endpoint": {"address": {"socket_address": {"address": e.address, "port_value": e.port}}},
                            "load_balancing_weight": e.weight,
                            "metadata": {"labels": dict(e.labels)},
                        }
                    ],
                }
                for e in cluster.endpoints
            ],
        },
    }


# --------------------------------------------------------------------------- /clusters

_GAUGE_SUFFIXES = ("_active", "_open")
_GAUGE_NAMES = frozenset({"retry_budget_balance"})


def clusters_view(mesh: Mesh) -> dict[str, Any]:
    """Every cluster with its policy summary, numeric stats and hosts (health, ejection, active requests).

    A host is ``failed_outlier_check`` when the mesh's host table marks it
    ejected or the cluster's outlier detector holds it ejected.
    """
    snapshot = mesh.snapshot
    stats = mesh.stats()
    cluster_stats: Mapping[str, Mapping[str, Any]] = stats["clusters"]
    clusters: list[dict[str, Any]] = []
    for cluster in snapshot.clusters.values():
        own = cluster_stats.get(cluster.name, {})
        ejected_until: Mapping[str, float] = own.get("ejected_hosts", {})
        balancer = mesh.state.balancers.get(cluster.name)
        hosts = []
        for e in cluster.endpoints:
            host = mesh.host_stats.peek(e.key)
            ejected = e.key in ejected_until or (host is not None and host.ejected)
            hosts.append(
                {
                    "address": e.key,
                    "health_flags": ["failed_outlier_check"] if ejected else ["healthy"],
                    "healthy": not ejected,
                    "ejected": ejected,
                    "ejected_until": plain(ejected_until.get(e.key)),
                    "ejection_count": host.ejection_count if host is not None else 0,
                    "rq_active": host.active_requests if host is not None else 0,
                    "ewma_cost_s": plain(host.ewma_cost_s) if host is not None else 0.0,
                    "weight": e.weight,
                    "priority": e.priority,
                    "locality": plain(e.locality),
                    "labels": dict(e.labels),
                }
            )
        pool = cluster.policy.connection_pool
        clusters.append(
            {
                "name": cluster.name,
                "service": cluster.service,
                "port": cluster.port,
                "subset": cluster.subset,
                "resolution": cluster.resolution,
                "lb": balancer.describe() if balancer is not None else cluster.policy.lb.kind.value,
                "outlier_detection": cluster.policy.outlier_detection is not None,
                "circuit_breakers": {
                    "max_connections": pool.max_connections,
                    "max_pending_requests": pool.max_pending_requests,
                    "max_requests": pool.max_requests,
                    "max_retries": pool.max_retries,
                },
                "stats": {k: plain(v) for k, v in own.items() if _is_number(v)},
                "hosts": hosts,
            }
        )
    return {"version": snapshot.version, "clusters": clusters}


def clusters_text(view: Mapping[str, Any]) -> str:
    """Envoy's ``/clusters`` text lines (``name::host::stat::value``) from :func:`clusters_view`."""
    lines: list[str] = []
    for cluster in view["clusters"]:
        name = cluster["name"]
        for key, value in cluster["circuit_breakers"].items():
            lines.append(f"{name}::default_priority::{key}::{value}")
        lines.append(f"{name}::added_via_api::true")
        for host in cluster["hosts"]:
            prefix = f"{name}::{host['address']}"
            locality = host["locality"]
            flags = "healthy" if host["healthy"] else "".join(f"/{f}" for f in host["health_flags"])
            lines += [
                f"{prefix}::rq_active::{host['rq_active']}",
                f"{prefix}::hostname::",
                f"{prefix}::health_flags::{flags}",
                f"{prefix}::weight::{host['weight']}",
                f"{prefix}::region::{locality['region']}",
                f"{prefix}::zone::{locality['zone']}",
                f"{prefix}::sub_zone::{locality['sub_zone']}",
                f"{prefix}::canary::false",
                f"{prefix}::priority::{host['priority']}",
                f"{prefix}::ejection_count::{host['ejection_count']}",
            ]
    return "\n".join(lines) + "\n"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --------------------------------------------------------------------------- /routes


def routes_view(mesh: Mesh) -> dict[str, Any]:
    """Route configurations → virtual hosts (domains) → routes, each summarized for a person.

    Each route has ``id`` (stable: ``<config>/<vhost>/<index>``), ``virtual_service``
    (``namespace/name``, ``None`` for a generated default route), ``rule``,
    ``match`` (one readable string per OR'ed match block; ``["*"]`` matches all),
    ``action``, ``destinations`` (``weight`` as configured, ``percent`` of traffic),
    ``timeout_s``, ``retries``, ``fault``, ``rewrite``, ``redirect``, ``direct_response``
    and ``mirrors``.
    """
    snapshot = mesh.snapshot
    configs = []
    for config in snapshot.route_configs.values():
        vhosts = []
        for vhost in config.virtual_hosts:
            routes = [_route_view(config.name, vhost.name, i, route) for i, route in enumerate(vhost.routes)]
            vhosts.append({"name": vhost.name, "domains": list(vhost.domains), "routes": routes})
        configs.append({"name": config.name, "virtual_hosts": vhosts})
    return {"version": snapshot.version, "route_configs": configs}


def _route_view(config: str, vhost: str, index: int, route: Route) -> dict[str, Any]:
    if route.redirect is not None:
        action = "redirect"
    elif route.direct_response is not None:
        action = "direct_response"
    else:
        action = "route"
    retries = None
    if route.retry is not None:
        retry_on = [*route.retry.retry_on, *(str(code) for code in route.retry.retriable_status_codes)]
        retries = {
            "attempts": route.retry.num_retries,
            "per_try_timeout_s": route.retry.per_try_timeout_s,
            "retry_on": ",".join(retry_on),
        }
    return {
        "id": f"{config}/{vhost}/{index}",
        "virtual_service": route.source.virtual_service,
        "rule": route.source.rule_name,
        "index": route.source.rule_index,
        "file": route.source.file,
        "line": route.source.line,
        "match": [match_summary(m) for m in route.matches] or ["*"],
        "action": action,
        "destinations": [
            {
                "cluster": dest.cluster,
                "host": dest.host,
                "port": dest.port,
                "subset": dest.subset,
                "weight": dest.weight,
                "percent": round(percent, 3),
            }
            for dest, percent in destination_percents(route)
        ] if route.destinations else [],
        "timeout_s": route.timeout_s,
        "retries": retries,
        "fault": plain(route.fault),
        "rewrite": plain(route.rewrite),
        "redirect": plain(route.redirect),
        "direct_response": plain(route.direct_response),
        "mirrors": plain(route.mirrors),
    }


def _string_match(match: StringMatch) -> str:
    if match.kind == "present":
        return "present"
    case = " (ignore case)" if match.ignore_case else ""
    return f'{match.kind} "{match.value}"{case}'


def match_summary(match: RouteMatch) -> str:
    """One match block as text, e.g. ``headers[end-user] exact "jason"``; parts joined by `` && ``."""
    parts: list[str] = []
    for label, value in (("uri", match.uri), ("scheme", match.scheme), ("method", match.method),
                         ("authority", match.authority)):
        if value is not None:
            parts.append(f"{label} {_string_match(value)}")
    parts += [f"headers[{name}] {_string_match(m)}" for name, m in match.headers]
    parts += [f"!headers[{name}] {_string_match(m)}" for name, m in match.without_headers]
    parts += [f"query[{name}] {_string_match(m)}" for name, m in match.query_params]
    if match.port is not None:
        parts.append(f"port {match.port}")
    if match.source_labels:
        parts.append("sourceLabels " + ",".join(f"{k}={v}" for k, v in match.source_labels.items()))
    if match.source_namespace:
        parts.append(f"sourceNamespace {match.source_namespace}")
    if match.gateways:
        parts.append("gateways " + ",".join(match.gateways))
    text = " && ".join(parts) or "*"
    return f"{match.name}: {text}" if match.name else text
