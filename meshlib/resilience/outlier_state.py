"""Per-host outlier-detection state, ejection types and Envoy's stat names.

Split out of :mod:`meshlib.resilience.outlier` (the algorithm) to keep each
module small. :class:`HostDetectorState` is what Envoy's
DetectorHostMonitorImpl holds per host: consecutive counters, the two
success-rate buckets (current and closed interval) for external- and
local-origin results, the ejection multiplier k and the ejection times.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

STAT_PREFIX = "outlier_detection."

# Envoy's defaults for local-origin enforcement; the config model (and Istio) do not carry them.
ENFORCING_CONSECUTIVE_LOCAL_ORIGIN_FAILURE = 100.0
ENFORCING_LOCAL_ORIGIN_SUCCESS_RATE = 100.0
ENFORCING_FAILURE_PERCENTAGE_LOCAL_ORIGIN = 0.0


class EjectionType(Enum):
    """Why a host was ejected; the value is the Envoy stat suffix."""

    CONSECUTIVE_5XX = "consecutive_5xx"
    CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"
    CONSECUTIVE_LOCAL_ORIGIN_FAILURE = "consecutive_local_origin_failure"
    SUCCESS_RATE = "success_rate"
    SUCCESS_RATE_LOCAL_ORIGIN = "local_origin_success_rate"
    FAILURE_PERCENTAGE = "failure_percentage"
    FAILURE_PERCENTAGE_LOCAL_ORIGIN = "local_origin_failure_percentage"


COUNTER_NAMES: tuple[str, ...] = (
    STAT_PREFIX + "ejections_enforced_total",
    STAT_PREFIX + "ejections_active",
    STAT_PREFIX + "ejections_overflow",
    *(STAT_PREFIX + f"ejections_{kind}_{t.value}" for t in EjectionType for kind in ("enforced", "detected")),
)


def success_rate_ejection_threshold(rates: Sequence[float], stdev_factor: float) -> tuple[float, float]:
    """``(mean, mean - stdev_factor * stdev)`` with the population stdev, as Envoy computes it.

    Envoy's own example: rates ``[50, 100, 100, 100, 100]``, factor 1.9 → ``(90.0, 52.0)``.
    """
    mean = sum(rates) / len(rates)
    stdev = math.sqrt(sum((r - mean) ** 2 for r in rates) / len(rates))
    return mean, mean - stdev_factor * stdev


@dataclass(frozen=True, slots=True)
class OutlierHostState:
    """A read-only view of one host's detector state, for stats and explain."""

    consecutive_5xx: int
    consecutive_gateway_failure: int
    consecutive_local_origin_failure: int
    ejection_multiplier: int  # Envoy's ejectTimeBackoff, "k"
    num_ejections: int
    eject_until: float | None  # None unless this detector holds the host ejected
    success_rate: float | None  # from the last tick; None without enough volume


class HostDetectorState:
    """Mutable per-host detector state; plain slots because record() writes it per request."""

    __slots__ = (
        "backoff",
        "consecutive_5xx",
        "consecutive_gateway",
        "consecutive_local",
        "ejected_at",
        "ext_closed_success",
        "ext_closed_total",
        "ext_success",
        "ext_total",
        "last_unejected_at",
        "lo_closed_success",
        "lo_closed_total",
        "lo_success",
        "lo_total",
        "num_ejections",
        "success_rate",
    )

    def __init__(self) -> None:
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.consecutive_local = 0
        # Success-rate buckets: the current interval (written per result) and the closed
        # one (read at the tick), for external-origin and local-origin results.
        self.ext_total = self.ext_success = self.ext_closed_total = self.ext_closed_success = 0
        self.lo_total = self.lo_success = self.lo_closed_total = self.lo_closed_success = 0
        self.backoff = 0  # k: the ejection time multiplier
        self.num_ejections = 0
        self.ejected_at: float | None = None  # set while *this* detector holds the host ejected
        self.last_unejected_at: float | None = None
        self.success_rate = -1.0  # Envoy's "-1 = not computed"

    def reset_consecutive(self) -> None:
        self.consecutive_5xx = self.consecutive_gateway = self.consecutive_local = 0
