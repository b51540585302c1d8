"""The transport-neutral routing decision for one request.

:func:`decide` runs on the request path: it reads the compiled
:class:`~meshlib.mesh_state.MeshState`, matches the route, draws the weighted
destination and works out rewrites, and says what the adapter must do — dial a
cluster, pass the request through untouched, or answer locally. Picking the
endpoint is left to the adapter's attempt loop, because each retry picks again.
The same function backs ``mesh.explain`` so explanations cannot drift from
behaviour.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from meshlib.balancing import ClusterBalancer
from meshlib.config.model import Cluster, Route, WeightedCluster
from meshlib.mesh_state import MeshState
from meshlib.request import RequestView
from meshlib.routing import RouteHit, pick_destination, redirect_location, rewrite_path


class Action(Enum):
    ROUTE = "route"  # dial an endpoint of ``cluster``
    PASSTHROUGH = "passthrough"  # not a mesh host: send as the caller wrote it (ALLOW_ANY)
    LOCAL_REPLY = "local_reply"  # answer without dialling (404, 502, 503, redirect, direct response)


@dataclass(slots=True)
class Decision:
    action: Action
    hit: RouteHit | None = None
    destination: WeightedCluster | None = None
    cluster: Cluster | None = None
    balancer: ClusterBalancer | None = None
    path: str | None = None  # rewritten path, None = unchanged
    authority: str | None = None  # rewritten Host, None = unchanged
    status: int = 0  # local replies
    body: bytes = b""
    location: str | None = None
    flag: str = ""  # Envoy response flag for local replies: NR, UH, NC, DR (direct response)
    request: RequestView | None = None  # set for ROUTE decisions (a test's fault matchers read it)
    # What telemetry derives from this decision (a CLIENT span's end attributes), kept with it when the
    # decision is shared — the fused path reuses one per request shape and sets a dict here — so that work
    # is done once per outcome, not per request. None: a decision made for one request, nothing is kept.
    telemetry_memo: dict[object, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def route(self) -> Route | None:
        return self.hit.route if self.hit is not None else None


def decide(state: MeshState, request: RequestView, port: int, rng: random.Random) -> Decision:
    """Route ``request`` (sent to ``port``) against ``state``; pure apart from ``rng``."""
    hit = state.routes.route(request, port)
    if hit is None:
        if state.routes.has_virtual_host(request.authority, port):
            return _local(404, f"no route matched {request.method} {request.authority}{request.path}", "NR")
        if state.registry_only:
            return _local(
                502, f"{request.authority} is not a mesh service (outbound traffic policy REGISTRY_ONLY)", "NR"
            )
        return Decision(Action.PASSTHROUGH)
    route = hit.route
    if route.direct_response is not None:
        return Decision(
            Action.LOCAL_REPLY, hit=hit, status=route.direct_response.status, body=route.direct_response.body,
            flag="DR",
        )
    if route.redirect is not None:
        status, location = redirect_location(route.redirect, request, port)
        return Decision(Action.LOCAL_REPLY, hit=hit, status=status, location=location, flag="DR")
    destinations = route.destinations
    # One destination (the common case) needs no draw: pick_destination's first branch, inlined.
    destination = destinations[0] if len(destinations) == 1 else pick_destination(route, rng)
    if destination is None:
        return _local(503, "every destination of the matched route has weight 0", "NR", hit)
    cluster = state.snapshot.clusters.get(destination.cluster)
    if cluster is None:
        return _local(503, f"cluster {destination.cluster} not found", "NC", hit)
    decision = Decision(Action.ROUTE, hit, destination, cluster, state.balancers[cluster.name], request=request)
    rewrite = route.rewrite
    if rewrite is not None:
        if rewrite.uri is not None or rewrite.uri_regex is not None:
            decision.path = rewrite_path(rewrite, request.path, hit.matched)
        decision.authority = rewrite.authority
    return decision


def _local(status: int, reason: str, flag: str, hit: RouteHit | None = None) -> Decision:
    return Decision(Action.LOCAL_REPLY, hit=hit, status=status, body=f"meshlib: {reason}\n".encode(), flag=flag)
