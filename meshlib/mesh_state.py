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
from meshlib.routing import RouteTable


class MeshState:
    __slots__ = ("balancers", "registry_only", "routes", "snapshot")

    def __init__(self, snapshot: MeshSnapshot, *, registry_only: bool = False) -> None:
        self.snapshot = snapshot
        self.registry_only = registry_only
        self.routes = RouteTable.compile(snapshot)
        workload = snapshot.workload
        self.balancers: Mapping[str, ClusterBalancer] = {
            name: ClusterBalancer(cluster, workload.locality, local_labels=workload.labels)
            for name, cluster in snapshot.clusters.items()
        }
