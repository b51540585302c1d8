"""Load balancing: Envoy/Istio semantics, decided in-process (semantics.md §1).

A :class:`ClusterBalancer` per cluster chooses priority level, then locality,
then host; the host choice is one of the pickers below, each a small module
with its algorithm and source described at the top. Everything is synchronous
and takes its clock and randomness from a :class:`PickContext`.

Typical use on the request path::

    ctx = PickContext(rng, now, stats, balancer.request_hash(request))
    endpoint = balancer.pick(ctx)       # None → 503 "no healthy upstream"
"""

from meshlib.balancing.cluster import HOST_SELECTION_ATTEMPTS, ClusterBalancer
from meshlib.balancing.context import PickContext, Picker
from meshlib.balancing.edf import EdfScheduler
from meshlib.balancing.hashing import endpoint_hash_key, request_hash
from meshlib.balancing.least_request import LeastRequestPicker, WeightedLeastRequestPicker
from meshlib.balancing.locality import (
    EndpointLayout,
    LocalityGroup,
    LocalityPicker,
    effective_locality_weight,
    layout_endpoints,
    locality_failover_priority,
    locality_matches,
)
from meshlib.balancing.maglev import MaglevPicker
from meshlib.balancing.peak_ewma import PeakEwmaPicker, observe_rtt, peak_ewma_load
from meshlib.balancing.priority import (
    PriorityPicker,
    PriorityPlan,
    level_health,
    plan_priorities,
    priority_loads,
)
from meshlib.balancing.random import RandomPicker
from meshlib.balancing.ring_hash import RingHashPicker
from meshlib.balancing.round_robin import RoundRobinPicker, WeightedRoundRobinPicker
from meshlib.balancing.warmup import warmup_factor

__all__ = [
    "HOST_SELECTION_ATTEMPTS",
    "ClusterBalancer",
    "EdfScheduler",
    "EndpointLayout",
    "LeastRequestPicker",
    "LocalityGroup",
    "LocalityPicker",
    "MaglevPicker",
    "PeakEwmaPicker",
    "PickContext",
    "Picker",
    "PriorityPicker",
    "PriorityPlan",
    "RandomPicker",
    "RingHashPicker",
    "RoundRobinPicker",
    "WeightedLeastRequestPicker",
    "WeightedRoundRobinPicker",
    "effective_locality_weight",
    "endpoint_hash_key",
    "layout_endpoints",
    "level_health",
    "locality_failover_priority",
    "locality_matches",
    "observe_rtt",
    "peak_ewma_load",
    "plan_priorities",
    "priority_loads",
    "request_hash",
    "warmup_factor",
]
