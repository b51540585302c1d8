"""Slow start ("warmup"): new hosts ramp up their share of traffic.

Envoy's ``slow_start_config`` for round robin and least request, Istio's
``warmup {duration, minimumPercent, aggression}`` (semantics.md §1). While a
host is younger than the window its weight is scaled::

    w' = w * max(min_weight_percent / 100, t_factor ** (1 / aggression))
    t_factor = max(seconds_since_first_seen, 1) / window

Aggression 1 is a linear ramp; larger values ramp faster at first. The floor
keeps a brand-new host from getting nothing at all (default 10%). Age is
measured from :attr:`HostStats.first_seen`, i.e. when this process first saw
the host, which is what a sidecar would measure too.
"""

from __future__ import annotations

from meshlib.config.model import Warmup

__all__ = ["in_warmup", "warmup_factor"]


def in_warmup(age_s: float, warmup: Warmup) -> bool:
    """True while a host of this age is still inside the slow-start window."""
    return 0.0 <= age_s < warmup.duration_s


def warmup_factor(age_s: float, warmup: Warmup) -> float:
    """Weight multiplier in (0, 1] for a host first seen ``age_s`` seconds ago."""
    window = warmup.duration_s
    if window <= 0.0 or not in_warmup(age_s, warmup):
        return 1.0
    time_factor = max(age_s, 1.0) / window
    aggression = warmup.aggression if warmup.aggression > 0 else 1.0
    ramp: float = time_factor ** (1.0 / aggression)
    return min(1.0, max(warmup.min_weight_percent / 100.0, ramp))
