"""What the request path reads: a snapshot plus everything compiled from it.

A :class:`MeshState` is built on the control path whenever a new
:class:`~meshlib.config.model.MeshSnapshot` arrives (route table compiled,
one balancer per cluster with its rings and priority tables precomputed) and
then published by swapping a single reference, so a request sees either the
old configuration or the new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Mapping

from meshlib.balancing import ClusterBalancer
from meshlib.config.model import MeshSnapshot
from meshlib.resilience.ratelimit import TokenBucket
from meshlib.routing import RouteTable
from meshlib.security.authz import DEFAULT_ROOT_NAMESPACE, AuthorizationEngine, engine_for


class MeshState:
    __slots__ = ("authz", "balancers", "registry_only", "route_buckets", "routes", "snapshot")

    def __init__(
        self, snapshot: MeshSnapshot, *, registry_only: bool = False, root_namespace: str = DEFAULT_ROOT_NAMESPACE
    ) -> None:
        self.snapshot = snapshot
        # A Sidecar's outboundTrafficPolicy for this workload overrides the mesh-wide setting.
        policy = snapshot.outbound_traffic_policy
        self.registry_only = policy == "REGISTRY_ONLY" if policy else registry_only
        self.routes = RouteTable.compile(snapshot)
        workload = snapshot.workload
        # Inbound AuthorizationPolicies for this workload; None (nothing to check) when none applies.
        self.authz: AuthorizationEngine | None = engine_for(snapshot.security, workload, root_namespace)
        self.balancers: Mapping[str, ClusterBalancer] = {
            name: ClusterBalancer(cluster, workload.locality, local_labels=workload.labels)
            for name, cluster in snapshot.clusters.items()
        }
        # Per-route local rate-limit buckets, keyed by the route object's identity
        # (routes are frozen and live as long as this state). A swap starts them full.
        self.route_buckets: dict[int, TokenBucket] = {}
        for config in snapshot.route_configs.values():
            for vhost in config.virtual_hosts:
                for route in vhost.routes:
                    if route.rate_limit is not None:
                        self.route_buckets[id(route)] = TokenBucket(
                            route.rate_limit.max_tokens, route.rate_limit.tokens_per_fill,
                            route.rate_limit.fill_interval_s,
                        )
