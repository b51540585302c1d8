"""Fault injection decisions for a VirtualService ``fault`` (Envoy's fault filter).

:func:`decide_fault` draws, per request, whether to delay and whether to
abort. As in Envoy's ``FaultFilter``:

- the delay is drawn first and the abort second, **independently** — a request
  may be both delayed and aborted (the abort answers after the delay);
- a percentage of 0 never fires (Istio: an unset ``percentage`` means no
  fault; the model stores that as 0);
- the draw is Envoy's ``featureEnabled`` against a ``FractionalPercent`` with
  denominator 1,000,000, which Istio builds as ``numerator = uint32(percent ×
  10,000)`` — so fractional percentages like 0.1 are exact to 0.0001%, and
  anything at or above 100 always fires.

Faults run before the router, so the caller must not retry an injected abort
nor count it against timeouts (semantics.md §6).
"""

from __future__ import annotations

import random
from typing import NamedTuple

from meshlib.config.model import FaultPolicy

_DENOMINATOR = 1_000_000  # envoy.type.v3.FractionalPercent.MILLION


class FaultAbort(NamedTuple):
    """What to answer instead of calling upstream: an HTTP status or a gRPC status."""

    http_status: int | None
    grpc_status: int | None


class FaultDecision(NamedTuple):
    """The draw for one request: a delay in seconds and/or an abort, each or both ``None``."""

    delay_s: float | None
    abort: FaultAbort | None


NO_FAULT = FaultDecision(None, None)


_PER_PERCENT = _DENOMINATOR // 100


def _fires(percent: float, rng: random.Random) -> bool:
    # Istio's translatePercentToFractionalPercent truncates percent × 10^4.
    numerator = int(percent * _PER_PERCENT)
    # A uniform integer in [0, 10^6), as Envoy's random % denominator; a zero
    # numerator returns before drawing, so a 0% part consumes no randomness.
    return numerator > 0 and int(rng.random() * _DENOMINATOR) < numerator


def decide_fault(fault: FaultPolicy | None, rng: random.Random) -> FaultDecision:
    """Draw the delay, then the abort, independently; :data:`NO_FAULT` when neither fires."""
    if fault is None:
        return NO_FAULT
    delay: float | None = None
    # Envoy samples only a configured part, so an absent delay draws nothing
    # and the abort's draw does not depend on it.
    if fault.delay_s is not None and fault.delay_s > 0 and _fires(fault.delay_percent, rng):
        delay = fault.delay_s
    abort: FaultAbort | None = None
    if (fault.abort_http_status is not None or fault.abort_grpc_status is not None) and _fires(
        fault.abort_percent, rng
    ):
        abort = FaultAbort(fault.abort_http_status, fault.abort_grpc_status)
    if delay is None and abort is None:
        return NO_FAULT
    return FaultDecision(delay, abort)
