"""The per-cluster balancer: priority level → locality → host (semantics.md §1).

:class:`ClusterBalancer` is grpc-go's *balancer*: built once per cluster per
configuration snapshot (control path), it lays endpoints out in priority
levels and locality groups (:mod:`~meshlib.balancing.locality`). On the
request path it owns one composed *picker* — a
:class:`~meshlib.balancing.priority.PriorityPicker` over levels, each level a
:class:`~meshlib.balancing.locality.LocalityPicker` or directly the policy's
host picker — derived from which hosts are available.

Availability lives in the shared :class:`~meshlib.host_stats.HostStatsTable`.
Its ``health_version`` moves whenever any host's ejection state changes; only
then (or when a slow-start ramp needs a new step) does the balancer recompute
the plan. Host pickers are cached by the exact available-host set they were
built over, so an ejection elsewhere in the mesh (which bumps the shared
version) rebuilds nothing here, round-robin cursors keep their place, and a
host flapping in and out does not rebuild a 65537-slot Maglev table each time.

The steady-state pick is: one integer compare, one attribute read, one
picker call — no allocation besides what the picker itself needs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

from meshlib.balancing.context import PickContext, Picker
from meshlib.balancing.hashing import request_hash
from meshlib.balancing.least_request import least_request_picker
from meshlib.balancing.locality import (
    EndpointLayout,
    LocalityGroup,
    LocalityPicker,
    effective_locality_weight,
    layout_endpoints,
)
from meshlib.balancing.maglev import MaglevPicker, is_prime
from meshlib.balancing.peak_ewma import PeakEwmaPicker
from meshlib.balancing.priority import PriorityPicker, plan_priorities
from meshlib.balancing.random import RandomPicker
from meshlib.balancing.ring_hash import RingHashPicker
from meshlib.balancing.round_robin import round_robin_picker
from meshlib.balancing.warmup import in_warmup, warmup_factor
from meshlib.config.model import EMPTY_LABELS, Cluster, Endpoint, LbKind, Locality
from meshlib.host_stats import HostStatsTable
from meshlib.request import RequestView

__all__ = ["HOST_SELECTION_ATTEMPTS", "ClusterBalancer"]

# Istio sets Envoy's host_selection_retry_max_attempts to 5 with previous_hosts.
HOST_SELECTION_ATTEMPTS = 5
# Cached host pickers per balancer; beyond this the cache is simply cleared.
_CACHE_LIMIT = 64
_HASH_KINDS = frozenset({LbKind.RING_HASH, LbKind.MAGLEV})
_WARMUP_KINDS = frozenset({LbKind.ROUND_ROBIN, LbKind.LEAST_REQUEST})
_NO_LOCALITY = Locality()


def _host_weight(endpoint: Endpoint) -> float:
    # Envoy rejects weight 0; treat a missing/zero weight as the default 1.
    return float(endpoint.weight) if endpoint.weight > 0 else 1.0


class ClusterBalancer:
    """Chooses an endpoint of one cluster per request; ``None`` = no healthy upstream."""

    __slots__ = (
        "_cache",
        "_endpoints",
        "_expires",
        "_hash_based",
        "_keys",
        "_layout",
        "_lb",
        "_picker",
        "_version",
        "_warmup",
        "cluster",
        "ewma_decay_s",
        "local_locality",
    )

    def __init__(
        self,
        cluster: Cluster,
        local_locality: Locality = _NO_LOCALITY,
        *,
        local_labels: Mapping[str, str] = EMPTY_LABELS,
    ) -> None:
        lb = cluster.policy.lb
        if lb.kind is LbKind.RING_HASH and lb.ring_min_size > lb.ring_max_size:
            raise ValueError(
                f"ring hash: minimum_ring_size ({lb.ring_min_size}) > maximum_ring_size ({lb.ring_max_size})"
            )
        if lb.kind is LbKind.MAGLEV and not is_prime(lb.maglev_table_size):
            raise ValueError(f"maglev table size must be prime, got {lb.maglev_table_size}")
        self.cluster = cluster
        self.local_locality = local_locality
        self._lb = lb
        self._endpoints = cluster.endpoints
        self._keys = tuple(e.key for e in cluster.endpoints)
        self._layout: EndpointLayout = layout_endpoints(cluster.endpoints, lb, local_locality, local_labels)
        self._hash_based = lb.kind in _HASH_KINDS
        # Peak EWMA's decay when this cluster balances on it, else None: the request
        # path feeds the latency estimate only then (read once per attempt).
        self.ewma_decay_s = lb.peak_ewma_decay_s if lb.kind is LbKind.PEAK_EWMA else None
        self._warmup = lb.warmup if lb.kind in _WARMUP_KINDS and lb.warmup is not None else None
        self._cache: dict[tuple[object, ...], Picker] = {}
        self._picker: Picker | None = None
        self._version = -1  # forces the first pick to build the plan
        self._expires = math.inf

    # ------------------------------------------------------------------ request path

    def pick(self, ctx: PickContext) -> Endpoint | None:
        """One host for this request, or ``None`` when there is none to send to."""
        if ctx.stats.health_version != self._version or ctx.now >= self._expires:
            self._refresh(ctx)
        picker = self._picker
        if picker is None:
            return None
        host = picker.pick(ctx)
        avoid = ctx.avoid
        if avoid and host.key in avoid:
            host = self._repick(ctx, picker, host)
        return host

    def _repick(self, ctx: PickContext, picker: Picker, host: Endpoint) -> Endpoint:
        # Previous-host avoidance: re-pick up to N times, then accept the last
        # pick (a retry to a tried host beats no retry). Hash pickers are
        # deterministic, so each re-pick moves their attempt offset on, as
        # Envoy passes the selection attempt to the ring/table lookup.
        avoid = ctx.avoid
        base = ctx.attempt
        try:
            for extra in range(1, HOST_SELECTION_ATTEMPTS + 1):
                ctx.attempt = base + extra
                host = picker.pick(ctx)
                if host.key not in avoid:
                    break
        finally:
            ctx.attempt = base
        return host

    def request_hash(self, request: RequestView) -> int | None:
        """The request's hash for this cluster's hash policies (None for non-hash policies)."""
        if not self._hash_based or not self._lb.hash_policies:
            return None
        return request_hash(self._lb.hash_policies, request)

    def describe(self) -> str:
        """The policy name, as ``explain`` reports it (e.g. ``"LEAST_REQUEST"``)."""
        return self._lb.kind.value

    def __repr__(self) -> str:
        return f"ClusterBalancer({self.cluster.name!r}, {self.describe()})"

    # ------------------------------------------------------------------ plan (rebuilt on health change)

    def _refresh(self, ctx: PickContext) -> None:
        stats = ctx.stats
        self._version = stats.health_version
        self._expires = math.inf
        levels = self._layout.levels
        if not levels:
            self._picker = None
            return
        is_available = stats.is_available
        keys = self._keys
        up = [tuple(i for i in g.members if is_available(keys[i])) for level in levels for g in level]
        # ``up`` is flat over groups; slice it back per level.
        per_level: list[list[tuple[int, ...]]] = []
        offset = 0
        for level in levels:
            per_level.append(up[offset : offset + len(level)])
            offset += len(level)
        available = [sum(len(u) for u in lv) for lv in per_level]
        total = [sum(len(g.members) for g in level) for level in levels]
        plan = plan_priorities(available, total, self._lb.panic_threshold_percent)
        if plan.no_host:
            self._picker = None
            return
        pickers: list[Picker | None] = []
        for index, level in enumerate(levels):
            if plan.loads[index] <= 0:
                pickers.append(None)
            elif plan.panic[index]:
                # Panic: all hosts of the level, healthy or not, localities ignored (Envoy).
                pickers.append(self._host_picker(("panic", index), self._layout.level_members(index), ctx))
            else:
                pickers.append(self._level_picker(index, level, per_level[index], ctx))
        live = [(load, p) for load, p in zip(plan.loads, pickers, strict=True) if load > 0]
        if len(live) == 1:
            self._picker = live[0][1]
        else:
            self._picker = PriorityPicker(plan.loads, pickers)
        if len(self._cache) > _CACHE_LIMIT:
            self._cache.clear()

    def _level_picker(
        self,
        index: int,
        groups: Sequence[LocalityGroup],
        up: Sequence[tuple[int, ...]],
        ctx: PickContext,
    ) -> Picker:
        if not self._layout.locality_weighted:
            return self._host_picker(("level", index), tuple(i for u in up for i in u), ctx)
        weights = [
            effective_locality_weight(g.weight, len(u), len(g.members))
            for g, u in zip(groups, up, strict=True)
        ]
        if self._hash_based:
            # Ring hash and maglev fold locality weights into host weights (Envoy's
            # thread-aware balancers build one ring per level): a host's share is
            # its locality's share times its share within the locality.
            members: list[int] = []
            host_weights: list[float] = []
            for u, w in zip(up, weights, strict=True):
                if w <= 0:
                    continue
                inside = sum(_host_weight(self._endpoints[i]) for i in u)
                for i in u:
                    members.append(i)
                    host_weights.append(w * _host_weight(self._endpoints[i]) / inside)
            return self._host_picker(("level", index), tuple(members), ctx, host_weights)
        pickers: list[Picker] = []
        live_weights: list[float] = []
        for group_index, (u, w) in enumerate(zip(up, weights, strict=True)):
            if w > 0:
                pickers.append(self._host_picker(("group", index, group_index), u, ctx))
                live_weights.append(w)
        if len(pickers) == 1:
            return pickers[0]
        return LocalityPicker(pickers, live_weights)

    def _host_picker(
        self,
        scope: tuple[object, ...],
        members: tuple[int, ...],
        ctx: PickContext,
        weights: Sequence[float] | None = None,
    ) -> Picker:
        endpoints = self._endpoints
        if weights is None:
            weights = [_host_weight(endpoints[i]) for i in members]
        warming = False
        if self._warmup is not None:
            warmup = self._warmup
            stats: HostStatsTable = ctx.stats
            now = ctx.now
            scaled: list[float] = []
            for i, weight in zip(members, weights, strict=True):
                # get(), not peek(): registers first_seen for hosts never used yet.
                age = now - stats.get(self._keys[i], now).first_seen
                if in_warmup(age, warmup):
                    warming = True
                    scaled.append(weight * warmup_factor(age, warmup))
                else:
                    scaled.append(weight)
            weights = scaled
        if warming:
            # Weights change with time: build fresh, uncached, and look again soon.
            assert self._warmup is not None
            step = min(1.0, self._warmup.duration_s / 10.0)
            self._expires = min(self._expires, ctx.now + step)
            return self._build(tuple(endpoints[i] for i in members), weights, ctx.rng)
        key = (scope, members, tuple(weights))
        picker = self._cache.get(key)
        if picker is None:
            picker = self._cache[key] = self._build(tuple(endpoints[i] for i in members), weights, ctx.rng)
        return picker

    def _build(self, hosts: tuple[Endpoint, ...], weights: Sequence[float], rng: random.Random) -> Picker:
        lb = self._lb
        kind = lb.kind
        if kind is LbKind.ROUND_ROBIN:
            return round_robin_picker(hosts, weights, rng)
        if kind is LbKind.LEAST_REQUEST:
            return least_request_picker(hosts, weights, lb.choice_count, lb.active_request_bias)
        if kind is LbKind.RING_HASH:
            return RingHashPicker(hosts, weights, lb.ring_min_size, lb.ring_max_size)
        if kind is LbKind.MAGLEV:
            return MaglevPicker(hosts, weights, lb.maglev_table_size)
        if kind is LbKind.PEAK_EWMA:
            return PeakEwmaPicker(hosts, lb.choice_count, lb.peak_ewma_decay_s)
        # RANDOM, and PASSTHROUGH clusters that do list endpoints.
        return RandomPicker(hosts)
