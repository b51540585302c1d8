"""Locality: Istio's locality failover priorities, ``distribute`` weights, and locality picking.

Istio does this work in istiod (``pilot/pkg/networking/core/loadbalancer``)
and hands Envoy ready-made priorities and locality weights; meshlib computes
the same thing once per cluster per configuration, relative to the *client's*
locality and labels (:func:`layout_endpoints`).

* **Failover** (only with ``LbPolicy.failover_enabled`` — Istio requires
  outlier detection, else traffic could never fail over — and locality LB not
  disabled): an endpoint's priority versus the client is 0 same
  region/zone/subzone, 1 same region+zone, 2 same region, 3 other regions.
  A ``failover {from, to}`` entry whose ``from`` is the client's region
  demotes other-region endpoints not in ``to`` to priority 4.
* **failoverPriority** labels: an endpoint's label priority is
  ``n - j`` for the first label j (of n) whose value differs from the
  client's (0 when all match); ``label=value`` entries override the client's
  value. Locality failover then applies on top only if ``failover`` is also
  set (Istio: ``label_priority * 5 + locality_priority``).
* Priorities are then compacted to 0..N-1 without gaps. We order by
  (endpoint's own priority, label priority, locality priority), which for
  Istio-sourced endpoints (own priority 0) is exactly Istio's order.
* **distribute** (takes precedence over failover, needs no outlier
  detection): the first entry whose ``from`` pattern matches the client sets
  locality weights; each ``to`` pattern's percent is split over the
  localities it matches in proportion to their weight (``ceil``), and
  localities no ``to`` matches are dropped from the cluster. Patterns are
  ``region/zone/subzone`` with ``*`` wildcards, missing parts match anything.
  As in Istio, a ``to`` weight of 0 leaves a locality's weight unchanged.

A locality's default weight is the sum of its endpoints' weights (what Istio
sets as ``load_balancing_weight``). At pick time a locality's effective
weight is ``weight * min(1, 1.4 * available / total)`` (Envoy
``effectiveLocalityWeight``) and :class:`LocalityPicker` runs EDF over them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meshlib.balancing.context import PickContext, Picker
from meshlib.balancing.edf import EdfScheduler
from meshlib.config.model import EMPTY_LABELS, Endpoint, LbPolicy, Locality, LocalityDistribute

__all__ = [
    "EndpointLayout",
    "LocalityGroup",
    "LocalityPicker",
    "effective_locality_weight",
    "layout_endpoints",
    "locality_failover_priority",
    "locality_matches",
]

# Labels Istio derives from a workload's locality, so failoverPriority can name them.
_TOPOLOGY_REGION = "topology.kubernetes.io/region"
_TOPOLOGY_ZONE = "topology.kubernetes.io/zone"
_TOPOLOGY_SUBZONE = "topology.istio.io/subzone"


@dataclass(frozen=True, slots=True)
class LocalityGroup:
    """The endpoints of one locality within one priority level."""

    priority: int
    locality: Locality
    members: tuple[int, ...]  # indices into Cluster.endpoints
    weight: float  # locality load-balancing weight


@dataclass(frozen=True, slots=True)
class EndpointLayout:
    """Endpoints arranged in compacted priority levels of locality groups."""

    levels: tuple[tuple[LocalityGroup, ...], ...]
    locality_weighted: bool

    def level_members(self, level: int) -> tuple[int, ...]:
        return tuple(i for group in self.levels[level] for i in group.members)


def locality_failover_priority(client: Locality, endpoint: Locality) -> int:
    """Istio ``LbPriority``: 0 same region/zone/subzone … 3 other region."""
    if client.region != endpoint.region:
        return 3
    if client.zone != endpoint.zone:
        return 2
    if client.subzone != endpoint.subzone:
        return 1
    return 0


def locality_matches(locality: Locality, pattern: str) -> bool:
    """Istio ``LocalityMatch``: ``region/zone/subzone`` with ``*``; missing zone/subzone match all."""
    region, zone, subzone = [*pattern.split("/"), "", ""][:3]
    return (
        region in ("*", locality.region)
        and (zone in ("*", "") or zone == locality.zone)
        and (subzone in ("*", "") or subzone == locality.subzone)
    )


def effective_locality_weight(weight: float, available: int, total: int) -> float:
    """``weight * min(1, 1.4 * available / total)``; 0 when nothing is available."""
    if total <= 0 or available <= 0:
        return 0.0
    return weight * min(1.0, 1.4 * available / total)


def _with_topology(labels: Mapping[str, str], locality: Locality) -> dict[str, str]:
    merged = dict(labels)
    for key, value in (
        (_TOPOLOGY_REGION, locality.region),
        (_TOPOLOGY_ZONE, locality.zone),
        (_TOPOLOGY_SUBZONE, locality.subzone),
    ):
        if value and key not in merged:
            merged[key] = value
    return merged


def _label_priorities(
    endpoints: Sequence[Endpoint], client_labels: Mapping[str, str], entries: Sequence[str]
) -> list[int]:
    names: list[str] = []
    overrides: dict[str, str] = {}
    for entry in entries:
        name, sep, value = entry.partition("=")
        names.append(name)
        if sep:
            overrides[name] = value
    lowest = len(names)
    result: list[int] = []
    for ep in endpoints:
        ep_labels = _with_topology(ep.labels, ep.locality)
        priority = 0
        for j, name in enumerate(names):
            wanted = overrides.get(name, client_labels.get(name, ""))
            if wanted != ep_labels.get(name, ""):
                priority = lowest - j
                break
        result.append(priority)
    return result


def _distribute_weights(
    groups: list[tuple[int, Locality, list[int]]],
    base_weights: list[float],
    client: Locality,
    distribute: Sequence[LocalityDistribute],
) -> list[float] | None:
    """New weight per group (0.0 = dropped), or None when no entry matches the client."""
    for rule in distribute:
        if not locality_matches(client, rule.from_):
            continue
        weights = [0.0] * len(groups)
        unclaimed = set(range(len(groups)))
        for pattern, percent in rule.to.items():
            matched = [g for g in sorted(unclaimed) if locality_matches(groups[g][1], pattern)]
            unclaimed.difference_update(matched)
            total = sum(base_weights[g] for g in matched)
            for g in matched:
                share = base_weights[g] * percent / total if total else 0.0
                # Istio keeps the original weight when the computed one is 0.
                weights[g] = float(math.ceil(share)) if share > 0 else base_weights[g]
        return weights
    return None


def layout_endpoints(
    endpoints: Sequence[Endpoint],
    lb: LbPolicy,
    client_locality: Locality,
    client_labels: Mapping[str, str] = EMPTY_LABELS,
) -> EndpointLayout:
    """Priority levels and locality groups for ``endpoints`` as seen from the client."""
    setting = lb.locality
    enabled = setting is None or setting.enabled
    distribute = setting.distribute if setting is not None and enabled else ()
    failover = enabled and bool(lb.failover_enabled) and not distribute

    label_prio = [0] * len(endpoints)
    locality_prio = [0] * len(endpoints)
    if failover:
        failover_labels = setting.failover_priority if setting is not None else ()
        failover_rules = setting.failover if setting is not None else ()
        client_all = _with_topology(client_labels, client_locality)
        if failover_labels and client_all:
            label_prio = _label_priorities(endpoints, client_all, failover_labels)
        if not failover_labels or failover_rules:
            for i, ep in enumerate(endpoints):
                p = locality_failover_priority(client_locality, ep.locality)
                if p == 3:
                    for rule in failover_rules:
                        if rule.from_ == client_locality.region:
                            if ep.locality.region != rule.to:
                                p = 4
                            break
                locality_prio[i] = p

    ranks = [(ep.priority, label_prio[i], locality_prio[i]) for i, ep in enumerate(endpoints)]
    compact = {rank: level for level, rank in enumerate(sorted(set(ranks)))}

    # Group by (level, locality), in order of first appearance.
    group_index: dict[tuple[int, Locality], int] = {}
    groups: list[tuple[int, Locality, list[int]]] = []
    for i, ep in enumerate(endpoints):
        key = (compact[ranks[i]], ep.locality)
        g = group_index.get(key)
        if g is None:
            g = group_index[key] = len(groups)
            groups.append((key[0], ep.locality, []))
        groups[g][2].append(i)

    base = [float(sum(max(1, endpoints[i].weight) for i in members)) for _, _, members in groups]
    weights: list[float] = base
    if distribute:
        distributed = _distribute_weights(groups, base, client_locality, distribute)
        if distributed is not None:
            weights = distributed

    levels: dict[int, list[LocalityGroup]] = {}
    for (level, locality, members), weight in zip(groups, weights, strict=True):
        if weight <= 0:
            continue  # a locality ``distribute`` does not send to: dropped, as Istio empties it
        levels.setdefault(level, []).append(LocalityGroup(level, locality, tuple(members), weight))
    # Re-compact: dropping localities may have emptied a level.
    ordered = tuple(
        tuple(LocalityGroup(new, g.locality, g.members, g.weight) for g in levels[old])
        for new, old in enumerate(sorted(levels))
    )
    return EndpointLayout(ordered, locality_weighted=bool(failover or distribute))


class LocalityPicker:
    """EDF over localities by effective weight, then the locality's own picker."""

    __slots__ = ("_pickers", "_scheduler")

    def __init__(self, pickers: Sequence[Picker], weights: Sequence[float]) -> None:
        if not pickers or len(pickers) != len(weights):
            raise ValueError("need one positive weight per locality picker")
        self._pickers = tuple(pickers)
        self._scheduler = EdfScheduler(weights)

    def pick(self, ctx: PickContext) -> Endpoint:
        return self._pickers[self._scheduler.pick()].pick(ctx)
