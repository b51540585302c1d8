"""Outlier detection (passive health checking): Envoy's algorithm as pure logic.

One :class:`OutlierDetector` per cluster watches the outcome of every attempt
and ejects hosts that behave unlike the others. It follows
``source/common/upstream/outlier_detection_impl.cc`` (semantics.md §2; where
Envoy's docs and code disagree, the code), with time and randomness injected:
the caller passes ``now`` (monotonic seconds) and a seeded ``random.Random``,
and drives :meth:`OutlierDetector.tick` every ``interval_s``. No asyncio, no I/O.

Per result (:meth:`~OutlierDetector.record`, O(1)):

- A 5xx bumps the consecutive-5xx counter; 502/503/504 also the
  consecutive-gateway counter, any other 5xx zeroes it; a non-5xx zeroes both
  and counts as a success in the host's success-rate bucket. A detector fires
  when its counter *equals* N (Envoy compares with ``==``), gateway before
  5xx, and the fired counter is reset. Local errors count as Envoy's router
  reports them: connect failure / reset → 503, timeout → 504, gRPC by its
  mapped HTTP status (:meth:`Outcome.outlier_status`). A circuit-breaker
  overflow is not the host's fault and is ignored (Envoy issue #25487).
- With ``split_external_local_origin_errors`` local errors go to a separate
  consecutive-local-origin counter and success-rate bucket instead.

Ejecting (:meth:`~OutlierDetector._eject`): ``100*(ejected+1)/hosts`` must be
``<= max_ejection_percent`` (Envoy ≥ 1.31, so 9 hosts at 10 % eject nothing),
except that ``always_eject_one_host`` allows one when none is ejected; otherwise
``ejections_overflow``. Then the ``enforcing_*`` percentage is rolled; when it
passes the host is ejected, ``num_ejections`` and the multiplier k grow.

Every interval (:meth:`~OutlierDetector.tick`), in Envoy's order: (1) return
hosts ejected for ``min(base*k, max)``, resetting their counters; (2) swap the
success-rate buckets; (3) success rate: among hosts with
``success_rate_request_volume`` requests in the closed interval (at least
``success_rate_minimum_hosts`` of them), eject those below
``mean - stdev_factor*stdev``; (4) failure percentage: eject hosts with
``100 - SR >= threshold``; (5) decrement k of every host that has been back in
service for at least one interval. Hosts return to service only at a tick.

Ejection state lives in the shared :class:`~meshlib.host_stats.HostStatsTable`
(one state per ``ip:port``, see docs/differences.md); counters, buckets and k
live here. A detector only returns hosts it ejected itself; a host ejected by
another cluster's detector counts as unavailable but not towards this
cluster's ``max_ejection_percent`` (Envoy counts per cluster).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from meshlib.config.model import OutlierDetection
from meshlib.host_stats import HostStats, HostStatsTable
from meshlib.resilience.outcome import GRPC_TO_HTTP, Outcome, OutcomeKind
from meshlib.resilience.outlier_state import (
    COUNTER_NAMES,
    ENFORCING_CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
    ENFORCING_FAILURE_PERCENTAGE_LOCAL_ORIGIN,
    ENFORCING_LOCAL_ORIGIN_SUCCESS_RATE,
    STAT_PREFIX,
    EjectionType,
    HostDetectorState,
    OutlierHostState,
    success_rate_ejection_threshold,
)

__all__ = [
    "COUNTER_NAMES",
    "EjectionType",
    "OutlierDetector",
    "OutlierHostState",
    "success_rate_ejection_threshold",
]

# In split mode Envoy's router reports "connect success" when the pool hands out a
# connection (UpstreamRequest::onPoolReady), before any later reset or per-try timeout.
# Only a connect failure happens without it; we replay that order (see record()).
_FAILED_AFTER_POOL_READY = frozenset(
    {OutcomeKind.RESET, OutcomeKind.RESET_BEFORE_REQUEST, OutcomeKind.REFUSED_STREAM,
     OutcomeKind.PER_TRY_TIMEOUT, OutcomeKind.PROTOCOL_ERROR}
)


class OutlierDetector:
    """Envoy outlier detection for one cluster. See the module docstring for the algorithm."""

    def __init__(self, config: OutlierDetection, stats: HostStatsTable, rng: random.Random) -> None:
        self._config = config
        self._stats = stats
        self._rng = rng
        self._hosts: dict[str, HostDetectorState] = {}
        self._active = 0  # hosts this detector holds ejected (Envoy's ejections_active gauge)
        self._counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self._next_due: float | None = None
        # The last external-origin success-rate statistics; -1 when not computed (as Envoy).
        self.success_rate_average = -1.0
        self.success_rate_ejection_threshold = -1.0

    # ------------------------------------------------------------------ configuration

    @property
    def config(self) -> OutlierDetection:
        return self._config

    @property
    def interval_s(self) -> float:
        return self._config.interval_s

    def update_config(self, config: OutlierDetection) -> None:
        """Apply new thresholds, keeping every host's counters, ejections and k.

        Envoy rebuilds the detector (losing state) when the cluster changes; meshlib
        keeps runtime state across configuration swaps.
        """
        self._config = config

    def set_hosts(self, keys: Sequence[str], now: float) -> None:
        """Set the cluster's membership: hosts that stay keep their state, new ones start fresh.

        A removed host's detector state is forgotten, as Envoy drops the host's
        monitor. If this detector had ejected it, the ejection is released in the
        shared table too — in Envoy the ejection dies with the host object, and
        here nobody else would ever return it to service.
        """
        kept = {key: self._hosts.get(key) or HostDetectorState() for key in keys}
        for key, state in self._hosts.items():
            if key not in kept and state.ejected_at is not None:
                self._active -= 1
                if self._owns(state, self._stats.peek(key)):
                    self._stats.set_ejected(key, False, now)
        self._hosts = kept
        if self._next_due is None:
            self._next_due = now + self._config.interval_s  # Envoy arms the timer on creation

    def close(self, now: float) -> None:
        """Release this detector's ejections before it is dropped (the cluster went away)."""
        self.set_hosts((), now)

    # ------------------------------------------------------------------ scheduling

    def next_tick_due(self, now: float) -> float:
        """Absolute time of the next tick: one interval after the last (or after arming)."""
        if self._next_due is None:
            self._next_due = now + self._config.interval_s
        return self._next_due

    def maybe_tick(self, now: float) -> bool:
        """Run :meth:`tick` if it is due; True when it ran."""
        if now < self.next_tick_due(now):
            return False
        self.tick(now)
        return True

    # ------------------------------------------------------------------ request path

    def record_success(self, key: str) -> None:
        """:meth:`record` of a response outside 5xx (gRPC: mapped): _local_origin_success (when split) and the
        non-5xx branch of _put_http_status, inlined. Nothing can eject here, so no clock is read."""
        state = self._hosts.get(key)
        if state is None:
            return
        if self._config.split_external_local_origin_errors:
            state.lo_total += 1
            state.lo_success += 1
            state.consecutive_local = 0
        state.ext_total += 1
        state.ext_success += 1
        state.consecutive_5xx = state.consecutive_gateway = 0

    def record(self, key: str, outcome: Outcome, now: float) -> None:
        """Account one attempt's outcome for host ``key``; may eject it. O(1)."""
        state = self._hosts.get(key)
        kind = outcome.kind
        if state is None or kind is OutcomeKind.OVERFLOW:
            # Unknown host (membership changed mid-flight) or a local circuit-breaker refusal,
            # which says nothing about the host; Envoy ignores both.
            return
        if kind is OutcomeKind.RESPONSE:
            grpc_status = outcome.grpc_status
            status = GRPC_TO_HTTP.get(grpc_status, 500) if grpc_status else outcome.http_status
            if not 500 <= status < 600:
                self.record_success(key)  # the common case, once per attempt: nothing can eject here
                return
        if not self._config.split_external_local_origin_errors:
            self._put_http_status(key, state, outcome.outlier_status(), now)
        elif outcome.kind is OutcomeKind.RESPONSE:
            self._local_origin_success(state)  # the connection worked
            self._put_http_status(key, state, outcome.outlier_status(), now)
        else:
            if outcome.kind in _FAILED_AFTER_POOL_READY:
                # Envoy counted a local success when the connection was handed out, so a
                # reset or timeout on a pooled connection never accumulates past 1 — only
                # connect failures eject by consecutive_local_origin_failure (code, not docs).
                self._local_origin_success(state)
            self._local_origin_failure(key, state, now)

    def _put_http_status(self, key: str, state: HostDetectorState, status: int, now: float) -> None:
        config = self._config
        state.ext_total += 1
        if 500 <= status < 600:
            if 502 <= status <= 504:
                state.consecutive_gateway += 1
                gateway_fired = state.consecutive_gateway == config.consecutive_gateway_failure
            else:
                state.consecutive_gateway = 0
                gateway_fired = False
            state.consecutive_5xx += 1
            fired_5xx = state.consecutive_5xx == config.consecutive_5xx
            # Envoy increments both counters, then handles gateway before 5xx; if the gateway
            # detector ejects, the 5xx one finds the host ejected and does nothing.
            if gateway_fired:
                self._on_consecutive(key, state, EjectionType.CONSECUTIVE_GATEWAY_FAILURE, now)
            if fired_5xx:
                self._on_consecutive(key, state, EjectionType.CONSECUTIVE_5XX, now)
        else:
            state.ext_success += 1
            state.consecutive_5xx = state.consecutive_gateway = 0

    def _local_origin_success(self, state: HostDetectorState) -> None:
        state.lo_total += 1
        state.lo_success += 1
        state.consecutive_local = 0

    def _local_origin_failure(self, key: str, state: HostDetectorState, now: float) -> None:
        state.lo_total += 1
        state.consecutive_local += 1
        if state.consecutive_local == self._config.consecutive_local_origin_failure:
            self._on_consecutive(key, state, EjectionType.CONSECUTIVE_LOCAL_ORIGIN_FAILURE, now)

    def _on_consecutive(self, key: str, state: HostDetectorState, kind: EjectionType, now: float) -> None:
        host = self._stats.get(key, now)
        if host.ejected:
            # Envoy returns before counting or resetting: a counter past N cannot fire
            # again (``==``) until the host is returned and its counters reset.
            return
        self._counters[STAT_PREFIX + "ejections_detected_" + kind.value] += 1
        self._eject(key, state, kind, now)
        # Reset even when not enforced, so a new run of N failures is needed to fire again.
        if kind is EjectionType.CONSECUTIVE_5XX:
            state.consecutive_5xx = 0
        elif kind is EjectionType.CONSECUTIVE_GATEWAY_FAILURE:
            state.consecutive_gateway = 0
        else:
            state.consecutive_local = 0

    # ------------------------------------------------------------------ ejecting

    def _enforcing_percent(self, kind: EjectionType) -> float:
        config = self._config
        return {
            EjectionType.CONSECUTIVE_5XX: config.enforcing_consecutive_5xx,
            EjectionType.CONSECUTIVE_GATEWAY_FAILURE: config.enforcing_consecutive_gateway_failure,
            EjectionType.CONSECUTIVE_LOCAL_ORIGIN_FAILURE: ENFORCING_CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
            EjectionType.SUCCESS_RATE: config.enforcing_success_rate,
            EjectionType.SUCCESS_RATE_LOCAL_ORIGIN: ENFORCING_LOCAL_ORIGIN_SUCCESS_RATE,
            EjectionType.FAILURE_PERCENTAGE: config.enforcing_failure_percentage,
            EjectionType.FAILURE_PERCENTAGE_LOCAL_ORIGIN: ENFORCING_FAILURE_PERCENTAGE_LOCAL_ORIGIN,
        }[kind]

    def _roll(self, percent: float) -> bool:
        # Envoy's featureEnabled: random % 100 < percent. 0 and 100 draw nothing, so
        # a disabled or always-on detector leaves the random stream untouched.
        if percent >= 100.0:
            return True
        if percent <= 0.0:
            return False
        return self._rng.random() * 100.0 < percent

    def _max_ejection_time(self) -> float:
        # Envoy refuses max < base; an unset max defaults to max(300 s, base).
        return max(self._config.max_ejection_time_s, self._config.base_ejection_time_s)

    def _ejection_duration(self, state: HostDetectorState) -> float:
        return min(self._config.base_ejection_time_s * state.backoff, self._max_ejection_time())

    def _eject(self, key: str, state: HostDetectorState, kind: EjectionType, now: float) -> None:
        """Envoy's DetectorImpl::ejectHost: the percentage guard, the enforcement roll, the ejection."""
        config = self._config
        max_percent = min(100.0, config.max_ejection_percent)
        # Envoy ≥ 1.31 counts the host about to be ejected: with fewer than 10 hosts at
        # 10 %, even the first ejection would exceed the limit.
        allowed = 100.0 * (self._active + 1) / len(self._hosts) <= max_percent
        if config.always_eject_one_host and self._active == 0:
            allowed = True
        if not allowed:
            self._counters[STAT_PREFIX + "ejections_overflow"] += 1
            return
        if not self._roll(self._enforcing_percent(kind)):
            return  # detected (already counted) but not enforced
        self._active += 1
        self._counters[STAT_PREFIX + "ejections_enforced_total"] += 1
        self._counters[STAT_PREFIX + "ejections_enforced_" + kind.value] += 1
        state.ejected_at = now
        state.num_ejections += 1
        base = config.base_ejection_time_s
        # Envoy grows k only while base*k < max + base, so k stops one step past the cap
        # and decays from there.
        if state.backoff * base < self._max_ejection_time() + base:
            state.backoff += 1
        self._stats.set_ejected(key, True, now)

    def _owns(self, state: HostDetectorState, host: HostStats | None) -> bool:
        """True when the shared table still shows the ejection this detector made."""
        return (
            state.ejected_at is not None
            and host is not None
            and host.ejected
            and host.ejected_at == state.ejected_at
        )

    def _release(self, state: HostDetectorState, now: float) -> None:
        """Envoy's unejectHost, detector side: reset counters so a few errors do not re-eject."""
        self._active -= 1
        state.ejected_at = None
        state.last_unejected_at = now
        state.reset_consecutive()

    # ------------------------------------------------------------------ interval

    def tick(self, now: float) -> None:
        """The interval sweep, in Envoy's order (DetectorImpl::onIntervalTimer)."""
        config = self._config
        for key, state in self._hosts.items():
            self._check_uneject(key, state, now)
            # Close the current success-rate bucket and start a new one.
            state.ext_closed_total, state.ext_closed_success = state.ext_total, state.ext_success
            state.lo_closed_total, state.lo_closed_success = state.lo_total, state.lo_success
            state.ext_total = state.ext_success = state.lo_total = state.lo_success = 0
            state.success_rate = -1.0
        self._process_success_rate(local_origin=False, now=now)
        if config.split_external_local_origin_errors:
            # Without the split no local-origin results are recorded, so nothing to do.
            self._process_success_rate(local_origin=True, now=now)
        for state in self._hosts.values():
            # Envoy decays k for hosts in service for at least one interval since their
            # last return; a host returned in this very tick waits for the next one.
            if (
                state.ejected_at is None
                and state.backoff > 0
                and state.last_unejected_at is not None
                and now - state.last_unejected_at >= config.interval_s
            ):
                state.backoff -= 1
        self._next_due = now + config.interval_s

    def _check_uneject(self, key: str, state: HostDetectorState, now: float) -> None:
        host = self._stats.peek(key)
        if state.ejected_at is not None:
            if not self._owns(state, host):
                # Returned (or re-ejected) behind our back through the shared table: our
                # ejection is over either way.
                self._release(state, now)
            elif now - state.ejected_at >= self._ejection_duration(state):
                self._release(state, now)
                self._stats.set_ejected(key, False, now)
        elif host is not None and host.ejected and now - host.ejected_at >= self._max_ejection_time():
            # Ejected by another detector that never returned it (dropped without close()).
            # No ejection under this config lasts longer, so this cannot cut one short.
            self._stats.set_ejected(key, False, now)

    def _process_success_rate(self, *, local_origin: bool, now: float) -> None:
        """Envoy's processSuccessRateEjections for one monitor (external or local origin)."""
        config = self._config
        sr_volume = config.success_rate_request_volume
        fp_volume = config.failure_percentage_request_volume
        sr_hosts: list[tuple[str, HostDetectorState, float]] = []
        fp_hosts: list[tuple[str, HostDetectorState, float]] = []
        for key, state in self._hosts.items():
            if not self._stats.is_available(key):
                continue  # already ejected: not part of the statistics
            if local_origin:
                volume, successes = state.lo_closed_total, state.lo_closed_success
            else:
                volume, successes = state.ext_closed_total, state.ext_closed_success
            if volume == 0:
                continue
            rate = successes * 100.0 / volume
            if not local_origin and volume >= min(sr_volume, fp_volume):
                state.success_rate = rate
            if volume >= sr_volume:
                sr_hosts.append((key, state, rate))
            if volume >= fp_volume:
                fp_hosts.append((key, state, rate))

        if not local_origin:
            self.success_rate_average = self.success_rate_ejection_threshold = -1.0
        if sr_hosts and len(sr_hosts) >= config.success_rate_minimum_hosts:
            mean, threshold = success_rate_ejection_threshold(
                [rate for _, _, rate in sr_hosts], config.success_rate_stdev_factor
            )
            if not local_origin:
                self.success_rate_average, self.success_rate_ejection_threshold = mean, threshold
            kind = EjectionType.SUCCESS_RATE_LOCAL_ORIGIN if local_origin else EjectionType.SUCCESS_RATE
            for key, state, rate in sr_hosts:
                if rate < threshold:
                    self._counters[STAT_PREFIX + "ejections_detected_" + kind.value] += 1
                    self._eject(key, state, kind, now)

        if fp_hosts and len(fp_hosts) >= config.failure_percentage_minimum_hosts:
            kind = (
                EjectionType.FAILURE_PERCENTAGE_LOCAL_ORIGIN if local_origin
                else EjectionType.FAILURE_PERCENTAGE
            )
            for key, state, rate in fp_hosts:
                # A host the success-rate pass just ejected is skipped: Envoy would eject it
                # a second time (double-counting ejections_active), which only its debug
                # builds catch with an assertion.
                if 100.0 - rate >= config.failure_percentage_threshold and self._stats.is_available(key):
                    self._counters[STAT_PREFIX + "ejections_detected_" + kind.value] += 1
                    self._eject(key, state, kind, now)

    # ------------------------------------------------------------------ queries

    def ejected_hosts(self, now: float) -> dict[str, float]:
        """Hosts this detector holds ejected → the time they become due to return.

        A host stays listed past that time until the tick that returns it (hosts
        return only at a tick, as in Envoy); ``now`` is not needed for that.
        """
        del now
        return {
            key: state.ejected_at + self._ejection_duration(state)
            for key, state in self._hosts.items()
            if state.ejected_at is not None
        }

    @property
    def counters(self) -> dict[str, int]:
        """Envoy-named ``outlier_detection.*`` counters, plus the ``ejections_active`` gauge."""
        counters = dict(self._counters)
        counters[STAT_PREFIX + "ejections_active"] = self._active
        return counters

    def host_state(self, key: str) -> OutlierHostState | None:
        """A snapshot of one host's detector state; None when the host is not in the cluster."""
        state = self._hosts.get(key)
        if state is None:
            return None
        return OutlierHostState(
            consecutive_5xx=state.consecutive_5xx,
            consecutive_gateway_failure=state.consecutive_gateway,
            consecutive_local_origin_failure=state.consecutive_local,
            ejection_multiplier=state.backoff,
            num_ejections=state.num_ejections,
            eject_until=(
                None if state.ejected_at is None else state.ejected_at + self._ejection_duration(state)
            ),
            success_rate=None if state.success_rate < 0 else state.success_rate,
        )

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self._hosts)
