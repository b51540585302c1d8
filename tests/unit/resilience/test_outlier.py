"""Outlier detection, request path: consecutive counters, the ejection guard, enforcement rolls.

Pure tests: time is a float passed in, randomness a seeded random.Random.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from meshlib.config.model import OutlierDetection
from meshlib.host_stats import HostStatsTable
from meshlib.resilience.outcome import Outcome, OutcomeKind
from meshlib.resilience.outlier import OutlierDetector, OutlierHostState


def make(n: int = 10, seed: int = 1, **overrides: Any) -> tuple[OutlierDetector, HostStatsTable, list[str]]:
    table = HostStatsTable()
    detector = OutlierDetector(OutlierDetection(**overrides), table, random.Random(seed))
    keys = [f"10.0.0.{i}:8080" for i in range(n)]
    detector.set_hosts(keys, 0.0)
    return detector, table, keys


def status(code: int) -> Outcome:
    return Outcome(OutcomeKind.RESPONSE, http_status=code)


def send(detector: OutlierDetector, key: str, outcome: Outcome, times: int, now: float = 0.0) -> None:
    for _ in range(times):
        detector.record(key, outcome, now)


def counter(detector: OutlierDetector, name: str) -> int:
    return detector.counters["outlier_detection." + name]


def ejected(table: HostStatsTable, key: str) -> bool:
    return not table.is_available(key)


def state_of(detector: OutlierDetector, key: str) -> OutlierHostState:
    state = detector.host_state(key)
    assert state is not None
    return state


# ---------------------------------------------------------------- consecutive 5xx


def test_consecutive_5xx_ejects_at_n_and_resets_the_counter() -> None:
    detector, table, keys = make()
    host = keys[0]
    send(detector, host, status(500), 4, now=1.0)
    assert state_of(detector, host).consecutive_5xx == 4
    assert not ejected(table, host)

    detector.record(host, status(500), 2.0)

    assert ejected(table, host)
    assert table.get(host, 2.0).ejected_at == 2.0
    state = state_of(detector, host)
    assert (state.consecutive_5xx, state.num_ejections, state.ejection_multiplier) == (0, 1, 1)
    assert detector.ejected_hosts(2.0) == {host: 32.0}  # base 30 s × k=1
    assert counter(detector, "ejections_detected_consecutive_5xx") == 1
    assert counter(detector, "ejections_enforced_consecutive_5xx") == 1
    assert counter(detector, "ejections_enforced_total") == 1
    assert counter(detector, "ejections_active") == 1


def test_a_non_5xx_resets_both_counters() -> None:
    detector, table, keys = make()
    host = keys[0]
    send(detector, host, status(503), 4)
    detector.record(host, status(404), 0.0)  # a 4xx is not a failure
    send(detector, host, status(503), 4)
    state = state_of(detector, host)
    assert (state.consecutive_5xx, state.consecutive_gateway_failure) == (4, 4)
    assert not ejected(table, host)


def test_a_non_gateway_5xx_zeroes_only_the_gateway_counter() -> None:
    detector, _, keys = make(consecutive_5xx=10)
    send(detector, keys[0], status(503), 4)
    detector.record(keys[0], status(500), 0.0)
    state = state_of(detector, keys[0])
    assert (state.consecutive_5xx, state.consecutive_gateway_failure) == (5, 0)


def test_gateway_failure_is_counted_but_not_enforced_by_default() -> None:
    detector, table, keys = make(consecutive_5xx=100)
    send(detector, keys[0], status(502), 5)
    assert not ejected(table, keys[0])
    assert counter(detector, "ejections_detected_consecutive_gateway_failure") == 1
    assert counter(detector, "ejections_enforced_consecutive_gateway_failure") == 0
    assert counter(detector, "ejections_enforced_total") == 0
    assert state_of(detector, keys[0]).consecutive_gateway_failure == 0  # reset after firing
    send(detector, keys[0], status(502), 5)
    assert counter(detector, "ejections_detected_consecutive_gateway_failure") == 2


def test_five_503s_fire_gateway_then_5xx_and_the_5xx_detector_ejects() -> None:
    detector, table, keys = make()
    send(detector, keys[0], status(503), 5)
    assert ejected(table, keys[0])
    assert counter(detector, "ejections_detected_consecutive_gateway_failure") == 1
    assert counter(detector, "ejections_enforced_consecutive_gateway_failure") == 0
    assert counter(detector, "ejections_enforced_consecutive_5xx") == 1


def test_istio_consecutive_gateway_errors_enforces_and_5xx_then_sees_an_ejected_host() -> None:
    # Istio's consecutiveGatewayErrors: 3 → consecutive_gateway_failure 3, enforcing 100.
    detector, table, keys = make(consecutive_gateway_failure=3, enforcing_consecutive_gateway_failure=100.0)
    send(detector, keys[0], status(502), 3)
    assert ejected(table, keys[0])
    assert counter(detector, "ejections_enforced_consecutive_gateway_failure") == 1
    # Two more 502s take the 5xx counter to 5, but the host is already ejected: Envoy
    # neither counts a detection nor resets, and the counter passes N without firing again.
    send(detector, keys[0], status(502), 4)
    assert counter(detector, "ejections_detected_consecutive_5xx") == 0
    assert state_of(detector, keys[0]).consecutive_5xx == 7


def test_local_errors_count_as_503_and_504_without_the_split() -> None:
    detector, table, keys = make(consecutive_5xx=100, consecutive_gateway_failure=5,
                                 enforcing_consecutive_gateway_failure=100.0)
    send(detector, keys[0], Outcome(OutcomeKind.CONNECT_FAILURE), 2)
    send(detector, keys[0], Outcome(OutcomeKind.RESET), 1)
    send(detector, keys[0], Outcome(OutcomeKind.PER_TRY_TIMEOUT), 1)
    send(detector, keys[0], Outcome(OutcomeKind.RESPONSE, http_status=200, grpc_status=14), 1)  # UNAVAILABLE
    assert ejected(table, keys[0])
    assert counter(detector, "ejections_enforced_consecutive_gateway_failure") == 1


def test_grpc_status_is_judged_by_its_http_mapping() -> None:
    detector, _, keys = make()
    send(detector, keys[0], Outcome(OutcomeKind.RESPONSE, http_status=200, grpc_status=13), 3)  # INTERNAL→500
    assert state_of(detector, keys[0]).consecutive_5xx == 3
    detector.record(keys[0], Outcome(OutcomeKind.RESPONSE, http_status=200, grpc_status=5), 0.0)  # →404
    assert state_of(detector, keys[0]).consecutive_5xx == 0


def test_circuit_breaker_overflow_is_not_the_hosts_fault() -> None:
    detector, table, keys = make()
    send(detector, keys[0], status(503), 4)
    send(detector, keys[0], Outcome(OutcomeKind.OVERFLOW), 3)  # neither a failure nor a success
    assert not ejected(table, keys[0])
    detector.record(keys[0], status(503), 0.0)
    assert ejected(table, keys[0])


def test_results_for_unknown_hosts_are_ignored() -> None:
    detector, table, _ = make()
    send(detector, "192.0.2.1:80", status(500), 10)
    assert table.peek("192.0.2.1:80") is None
    assert counter(detector, "ejections_detected_consecutive_5xx") == 0


# ---------------------------------------------------------------- split local / external origin


def test_split_connect_failures_use_the_local_origin_counter_only() -> None:
    detector, table, keys = make(split_external_local_origin_errors=True)
    send(detector, keys[0], Outcome(OutcomeKind.CONNECT_FAILURE), 4)
    state = state_of(detector, keys[0])
    assert (state.consecutive_local_origin_failure, state.consecutive_5xx) == (4, 0)
    detector.record(keys[0], Outcome(OutcomeKind.CONNECT_FAILURE), 0.0)
    assert ejected(table, keys[0])
    assert counter(detector, "ejections_detected_consecutive_local_origin_failure") == 1
    assert counter(detector, "ejections_enforced_consecutive_local_origin_failure") == 1  # Envoy default 100
    assert counter(detector, "ejections_detected_consecutive_5xx") == 0


def test_split_resets_and_timeouts_follow_a_pool_ready_success() -> None:
    # Envoy's router reports LocalOriginConnectSuccess on pool-ready, then the reset or
    # timeout: the consecutive local-origin counter never climbs past 1 for these.
    detector, table, keys = make(split_external_local_origin_errors=True)
    send(detector, keys[0], Outcome(OutcomeKind.PER_TRY_TIMEOUT), 10)
    send(detector, keys[0], Outcome(OutcomeKind.RESET), 10)
    state = state_of(detector, keys[0])
    assert (state.consecutive_local_origin_failure, state.consecutive_5xx) == (1, 0)
    assert not ejected(table, keys[0])


def test_split_responses_still_count_5xx_and_reset_the_local_counter() -> None:
    detector, table, keys = make(split_external_local_origin_errors=True)
    send(detector, keys[0], Outcome(OutcomeKind.CONNECT_FAILURE), 4)
    send(detector, keys[0], status(500), 4)
    state = state_of(detector, keys[0])
    assert (state.consecutive_local_origin_failure, state.consecutive_5xx) == (0, 4)
    detector.record(keys[0], status(500), 0.0)
    assert ejected(table, keys[0])
    assert counter(detector, "ejections_enforced_consecutive_5xx") == 1


def test_a_success_resets_both_origins_and_counts_both_totals() -> None:
    for split in (False, True):
        detector, _, keys = make(split_external_local_origin_errors=split)
        send(detector, keys[0], Outcome(OutcomeKind.CONNECT_FAILURE), 2)
        send(detector, keys[0], status(502), 2)
        raw = detector._hosts[keys[0]]  # the mutable counters behind the read-only view
        before = (raw.ext_total, raw.ext_success, raw.lo_total, raw.lo_success)
        detector.record(keys[0], status(204), 0.0)
        view = state_of(detector, keys[0])
        assert (view.consecutive_5xx, view.consecutive_gateway_failure) == (0, 0)
        assert (raw.ext_total, raw.ext_success) == (before[0] + 1, before[1] + 1)
        if split:
            assert view.consecutive_local_origin_failure == 0
            assert (raw.lo_total, raw.lo_success) == (before[2] + 1, before[3] + 1)
        else:
            assert (raw.lo_total, raw.lo_success) == before[2:]


# ---------------------------------------------------------------- max_ejection_percent


@pytest.mark.parametrize(
    ("hosts", "max_percent", "always_one", "expected"),
    [
        (10, 10.0, False, 1),  # 100*1/10 = 10 ≤ 10; 20 > 10
        (9, 10.0, False, 0),  # Envoy ≥ 1.31: 100*1/9 = 11.1 > 10, nothing
        (9, 10.0, True, 1),  # always_eject_one_host: one when none is ejected
        (20, 10.0, False, 2),
        (19, 10.0, False, 1),
        (3, 50.0, False, 1),  # 33.3 ≤ 50, 66.7 > 50
        (4, 50.0, False, 2),  # exactly 50 is allowed
        (5, 100.0, False, 5),
        (2, 0.0, False, 0),
        (2, 0.0, True, 1),
        (3, 150.0, False, 3),  # clamped to 100
    ],
)
def test_max_ejection_percent_counts_the_host_about_to_be_ejected(
    hosts: int, max_percent: float, always_one: bool, expected: int
) -> None:
    detector, table, keys = make(hosts, max_ejection_percent=max_percent, always_eject_one_host=always_one)
    for key in keys:
        send(detector, key, status(500), 5)
    assert sum(ejected(table, key) for key in keys) == expected
    assert counter(detector, "ejections_active") == expected
    assert counter(detector, "ejections_detected_consecutive_5xx") == hosts
    assert counter(detector, "ejections_overflow") == hosts - expected


def test_an_overflowed_detection_resets_the_counter() -> None:
    detector, table, keys = make(9)
    send(detector, keys[0], status(500), 9)
    assert not ejected(table, keys[0])
    assert counter(detector, "ejections_overflow") == 1  # fired once at 5, counter reset, now 4
    assert state_of(detector, keys[0]).consecutive_5xx == 4


# ---------------------------------------------------------------- enforcement rolls


def test_enforcing_percentage_is_a_roll_of_the_injected_rng() -> None:
    n = 2000
    detector, table, keys = make(n, seed=7, enforcing_consecutive_5xx=50.0, max_ejection_percent=100.0)
    for key in keys:
        send(detector, key, status(500), 5)
    enforced = sum(ejected(table, key) for key in keys)
    assert 0.45 * n < enforced < 0.55 * n
    assert counter(detector, "ejections_detected_consecutive_5xx") == n
    assert counter(detector, "ejections_enforced_consecutive_5xx") == enforced

    # The same seed makes the same choices.
    again, again_table, _ = make(n, seed=7, enforcing_consecutive_5xx=50.0, max_ejection_percent=100.0)
    for key in keys:
        send(again, key, status(500), 5)
    assert [ejected(again_table, k) for k in keys] == [ejected(table, k) for k in keys]


def test_enforcing_0_and_100_draw_nothing_from_the_rng() -> None:
    rng = random.Random(3)
    before = rng.getstate()
    table = HostStatsTable()
    detector = OutlierDetector(OutlierDetection(max_ejection_percent=100.0), table, rng)
    detector.set_hosts(["a:1", "b:1"], 0.0)
    send(detector, "a:1", status(502), 5)  # gateway at 0 %, then 5xx at 100 %
    assert ejected(table, "a:1")
    assert rng.getstate() == before


# ---------------------------------------------------------------- membership


def test_set_hosts_keeps_state_for_staying_hosts_and_forgets_removed_ones() -> None:
    detector, _, keys = make(3)
    a, b, c = keys
    send(detector, a, status(500), 4)
    send(detector, b, status(500), 4)
    detector.set_hosts([a, c, "10.9.9.9:8080"], 1.0)
    assert state_of(detector, a).consecutive_5xx == 4
    assert detector.host_state(b) is None
    assert state_of(detector, "10.9.9.9:8080").consecutive_5xx == 0
    detector.set_hosts([a, b, c], 2.0)
    assert state_of(detector, b).consecutive_5xx == 0
    assert detector.hosts == (a, b, c)


def test_removing_an_ejected_host_releases_its_ejection() -> None:
    detector, table, keys = make(2, max_ejection_percent=100.0)
    send(detector, keys[0], status(500), 5)
    assert ejected(table, keys[0])
    detector.set_hosts([keys[1]], 5.0)
    assert not ejected(table, keys[0])
    assert table.peek(keys[0]) is not None  # the shared runtime entry survives
    assert counter(detector, "ejections_active") == 0
    assert detector.ejected_hosts(5.0) == {}


def test_close_releases_every_ejection() -> None:
    detector, table, keys = make(2, max_ejection_percent=100.0)
    for key in keys:
        send(detector, key, status(500), 5)
    detector.close(1.0)
    assert not any(ejected(table, key) for key in keys)


def test_update_config_keeps_runtime_state() -> None:
    detector, table, keys = make()
    send(detector, keys[0], status(500), 4)
    detector.update_config(OutlierDetection(consecutive_5xx=6))
    assert state_of(detector, keys[0]).consecutive_5xx == 4
    detector.record(keys[0], status(500), 0.0)
    assert not ejected(table, keys[0])
    detector.record(keys[0], status(500), 0.0)
    assert ejected(table, keys[0])
