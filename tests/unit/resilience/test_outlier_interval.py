"""Outlier detection, interval sweep: returning hosts, k growth and decay, success rate, failure percentage.

Pure tests: ticks are called with plain float times; randomness is a seeded random.Random.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from meshlib.config.model import OutlierDetection
from meshlib.host_stats import HostStatsTable
from meshlib.resilience.outcome import Outcome, OutcomeKind
from meshlib.resilience.outlier import OutlierDetector, OutlierHostState, success_rate_ejection_threshold

OK = Outcome(OutcomeKind.RESPONSE, http_status=200)
ERROR = Outcome(OutcomeKind.RESPONSE, http_status=500)


def make(n: int = 10, seed: int = 1, **overrides: Any) -> tuple[OutlierDetector, HostStatsTable, list[str]]:
    table = HostStatsTable()
    detector = OutlierDetector(OutlierDetection(**overrides), table, random.Random(seed))
    keys = [f"10.0.0.{i}:8080" for i in range(n)]
    detector.set_hosts(keys, 0.0)
    return detector, table, keys


def counter(detector: OutlierDetector, name: str) -> int:
    return detector.counters["outlier_detection." + name]


def ejected(table: HostStatsTable, key: str) -> bool:
    return not table.is_available(key)


def state_of(detector: OutlierDetector, key: str) -> OutlierHostState:
    state = detector.host_state(key)
    assert state is not None
    return state


def eject_by_5xx(detector: OutlierDetector, key: str, now: float) -> None:
    for _ in range(5):
        detector.record(key, ERROR, now)


def make_sr(n: int, **overrides: Any) -> tuple[OutlierDetector, HostStatsTable, list[str]]:
    """A detector for success-rate tests: consecutive detectors off (Istio's 0), no percentage cap."""
    settings: dict[str, Any] = {
        "consecutive_5xx": 0, "consecutive_gateway_failure": 0, "max_ejection_percent": 100.0,
    }
    return make(n, **(settings | overrides))


def traffic(detector: OutlierDetector, key: str, successes: int, failures: int, now: float) -> None:
    """Failures interleaved with successes while both last (tallies are all that matter)."""
    for i in range(successes + failures):
        failed = (i < 2 * failures and i % 2 == 1) or i >= 2 * successes
        detector.record(key, ERROR if failed else OK, now)


# ---------------------------------------------------------------- returning to service


def test_a_host_returns_only_at_a_tick_past_its_time_with_counters_reset() -> None:
    detector, table, keys = make(max_ejection_percent=100.0)
    host = keys[0]
    eject_by_5xx(detector, host, 0.0)
    assert detector.ejected_hosts(0.0) == {host: 30.0}
    for _ in range(3):
        detector.record(host, ERROR, 5.0)  # still reached in panic mode: counted
    assert detector.ejected_hosts(35.0) == {host: 30.0}  # no tick yet: still ejected
    detector.tick(29.9)
    assert ejected(table, host)
    detector.tick(30.0)
    assert not ejected(table, host)
    assert detector.ejected_hosts(30.0) == {}
    assert state_of(detector, host).consecutive_5xx == 0
    assert counter(detector, "ejections_active") == 0


def test_ejection_time_grows_with_k_up_to_the_maximum_envoy_numbers() -> None:
    # Defaults: base 30 s, max 300 s. Envoy grows k while base*k < max + base, so k stops at 11.
    detector, _, keys = make(max_ejection_percent=100.0)
    host = keys[0]
    now = 0.0
    durations, multipliers = [], []
    for _ in range(13):
        eject_by_5xx(detector, host, now)
        until = detector.ejected_hosts(now)[host]
        durations.append(until - now)
        multipliers.append(state_of(detector, host).ejection_multiplier)
        now = until
        detector.tick(now)  # returned in this tick: no decay yet, so the next ejection grows k
    assert durations == [30.0 * k for k in range(1, 11)] + [300.0, 300.0, 300.0]
    assert multipliers == [*range(1, 12), 11, 11]
    assert state_of(detector, host).num_ejections == 13


def test_ejection_time_is_capped_by_max_ejection_time() -> None:
    detector, _, keys = make(max_ejection_percent=100.0, max_ejection_time_s=100.0)
    host = keys[0]
    now, durations = 0.0, []
    for _ in range(6):
        eject_by_5xx(detector, host, now)
        until = detector.ejected_hosts(now)[host]
        durations.append(until - now)
        now = until
        detector.tick(now)
    assert durations == [30.0, 60.0, 90.0, 100.0, 100.0, 100.0]
    assert state_of(detector, host).ejection_multiplier == 5  # 5*30 ≥ 100+30 stops growth


def test_k_decays_by_one_per_interval_in_service() -> None:
    detector, _, keys = make(max_ejection_percent=100.0)
    host = keys[0]
    now = 0.0
    for _ in range(3):  # k = 3
        eject_by_5xx(detector, host, now)
        now = detector.ejected_hosts(now)[host]
        detector.tick(now)
    returned = now
    assert state_of(detector, host).ejection_multiplier == 3  # not in the returning tick
    detector.tick(returned + 9.0)
    assert state_of(detector, host).ejection_multiplier == 3  # less than an interval
    seen = []
    for i in range(1, 5):
        detector.tick(returned + 10.0 * i)
        seen.append(state_of(detector, host).ejection_multiplier)
    assert seen == [2, 1, 0, 0]
    eject_by_5xx(detector, host, returned + 40.0)
    assert detector.ejected_hosts(returned + 40.0)[host] == returned + 40.0 + 30.0


def test_k_does_not_decay_while_ejected() -> None:
    detector, _, keys = make(max_ejection_percent=100.0)
    host = keys[0]
    eject_by_5xx(detector, host, 0.0)
    for t in (10.0, 20.0):
        detector.tick(t)
        assert state_of(detector, host).ejection_multiplier == 1


# ---------------------------------------------------------------- tick order


def test_a_host_due_back_is_returned_before_success_rate_runs_in_the_same_tick() -> None:
    detector, table, keys = make(5, max_ejection_percent=100.0, enforcing_success_rate=100.0)
    bad = keys[0]
    eject_by_5xx(detector, bad, 0.0)
    detector.tick(10.0)
    detector.tick(20.0)
    # The ejected host still takes traffic (panic) in [20, 30); the others are perfect.
    traffic(detector, bad, successes=50, failures=50, now=25.0)
    for key in keys[1:]:
        traffic(detector, key, successes=100, failures=0, now=25.0)
    detector.tick(30.0)
    # Returned first (30 s elapsed), then judged on the interval just closed: ejected again.
    assert ejected(table, bad)
    assert counter(detector, "ejections_enforced_success_rate") == 1
    assert detector.ejected_hosts(30.0) == {bad: 30.0 + 60.0}  # k = 2
    assert detector.success_rate_average == pytest.approx(90.0)
    assert detector.success_rate_ejection_threshold == pytest.approx(52.0)


def test_detection_reads_only_the_interval_just_closed() -> None:
    detector, table, keys = make(5, max_ejection_percent=100.0, enforcing_success_rate=100.0)
    traffic(detector, keys[0], successes=50, failures=50, now=1.0)
    for key in keys[1:]:
        traffic(detector, key, successes=100, failures=0, now=1.0)
    assert not ejected(table, keys[0])  # nothing happens between ticks
    detector.tick(10.0)
    assert ejected(table, keys[0])
    detector.tick(20.0)  # the interval [10, 20) had no traffic: no statistics at all
    assert detector.success_rate_average == -1.0
    assert counter(detector, "ejections_detected_success_rate") == 1


# ---------------------------------------------------------------- success rate


def test_success_rate_threshold_matches_envoys_example() -> None:
    rates = [50.0, 100.0, 100.0, 100.0, 100.0]
    assert success_rate_ejection_threshold(rates, 1.9) == pytest.approx((90.0, 52.0))
    mean, threshold = success_rate_ejection_threshold([90.0, 92.0, 94.0, 96.0, 98.0], 1.0)
    assert mean == 94.0
    assert threshold == pytest.approx(94.0 - 8.0**0.5)


@pytest.mark.parametrize(
    ("table_rows", "expected_ejected", "expected_mean"),
    [
        # (successes, failures) per host; request volume 100 needed.
        ([(100, 0)] * 4 + [(50, 50)], {4}, 90.0),
        # Host 5 has 0 % success but only 99 requests: it is not part of the statistics.
        ([(100, 0)] * 4 + [(50, 50), (0, 99)], {4}, 90.0),
        # Only 4 hosts with volume: fewer than success_rate_minimum_hosts (5), no detection.
        ([(100, 0)] * 3 + [(50, 50), (0, 99)], set(), -1.0),
        # Everyone equally bad: stdev 0, nobody is below the mean.
        ([(60, 40)] * 6, set(), 60.0),
        # Envoy data set {95,96,97,98,99,50,...}: mean 89.17, stdev ~17.3, threshold ~56.3.
        ([(95, 5), (96, 4), (97, 3), (98, 2), (99, 1), (50, 50)], {5}, 535.0 / 6),
    ],
)
def test_success_rate_detection_over_a_table_of_hosts(
    table_rows: list[tuple[int, int]], expected_ejected: set[int], expected_mean: float
) -> None:
    detector, table, keys = make_sr(len(table_rows), enforcing_success_rate=100.0)
    for key, (ok, bad) in zip(keys, table_rows, strict=True):
        traffic(detector, key, successes=ok, failures=bad, now=1.0)
    detector.tick(10.0)
    assert {i for i, key in enumerate(keys) if ejected(table, key)} == expected_ejected
    assert detector.success_rate_average == pytest.approx(expected_mean)
    assert counter(detector, "ejections_detected_success_rate") == len(expected_ejected)


def test_istio_success_rate_is_detected_but_not_enforced() -> None:
    detector, table, keys = make_sr(5)  # enforcing_success_rate 0 (Istio)
    traffic(detector, keys[0], successes=50, failures=50, now=1.0)
    for key in keys[1:]:
        traffic(detector, key, successes=100, failures=0, now=1.0)
    detector.tick(10.0)
    assert not ejected(table, keys[0])
    assert counter(detector, "ejections_detected_success_rate") == 1
    assert counter(detector, "ejections_enforced_success_rate") == 0
    assert state_of(detector, keys[0]).success_rate == 50.0


def test_success_rate_ejections_respect_max_ejection_percent() -> None:
    # 10 hosts at the default 10 %: only the first of two outliers goes.
    detector, table, keys = make_sr(10, enforcing_success_rate=100.0, max_ejection_percent=10.0)
    for i, key in enumerate(keys):
        traffic(detector, key, successes=10 if i < 2 else 100, failures=90 if i < 2 else 0, now=1.0)
    detector.tick(10.0)
    assert [ejected(table, key) for key in keys[:2]] == [True, False]
    assert counter(detector, "ejections_detected_success_rate") == 2
    # Failure percentage (90 % ≥ 85) detects the second one too. Envoy checks the cap before
    # rolling the enforcement, so even at enforcing 0 % that is another overflow.
    assert counter(detector, "ejections_detected_failure_percentage") == 1
    assert counter(detector, "ejections_overflow") == 2


# ---------------------------------------------------------------- failure percentage


def test_failure_percentage_ejects_at_or_above_the_threshold() -> None:
    detector, table, keys = make_sr(6, enforcing_failure_percentage=100.0, failure_percentage_threshold=85.0)
    rows = [(50, 0), (50, 0), (50, 0), (15, 85), (16, 84), (5, 45)]  # 85 % and 90 % fail; 84 % stays
    for key, (ok, bad) in zip(keys, rows, strict=True):
        traffic(detector, key, successes=ok, failures=bad, now=1.0)
    detector.tick(10.0)
    assert [ejected(table, key) for key in keys] == [False, False, False, True, False, True]
    assert counter(detector, "ejections_enforced_failure_percentage") == 2
    assert counter(detector, "ejections_detected_success_rate") == 0  # volume < 100 everywhere


def test_failure_percentage_needs_minimum_hosts_with_volume_and_is_off_by_default() -> None:
    detector, _, keys = make_sr(5, enforcing_failure_percentage=100.0)
    traffic(detector, keys[0], successes=0, failures=60, now=1.0)
    for key in keys[1:4]:
        traffic(detector, key, successes=60, failures=0, now=1.0)
    traffic(detector, keys[4], successes=49, failures=0, now=1.0)  # below volume 50
    detector.tick(10.0)
    assert counter(detector, "ejections_detected_failure_percentage") == 0  # only 4 hosts qualify

    default, default_table, dkeys = make_sr(5)
    traffic(default, dkeys[0], successes=5, failures=55, now=1.0)
    for key in dkeys[1:]:
        traffic(default, key, successes=60, failures=0, now=1.0)
    default.tick(10.0)
    assert counter(default, "ejections_detected_failure_percentage") == 1
    assert counter(default, "ejections_enforced_failure_percentage") == 0
    assert not ejected(default_table, dkeys[0])


def test_a_host_ejected_by_success_rate_is_not_ejected_again_by_failure_percentage() -> None:
    detector, table, keys = make_sr(5, enforcing_success_rate=100.0, enforcing_failure_percentage=100.0)
    traffic(detector, keys[0], successes=10, failures=90, now=1.0)
    for key in keys[1:]:
        traffic(detector, key, successes=100, failures=0, now=1.0)
    detector.tick(10.0)
    assert ejected(table, keys[0])
    assert counter(detector, "ejections_enforced_success_rate") == 1
    assert counter(detector, "ejections_detected_failure_percentage") == 0
    assert counter(detector, "ejections_active") == 1


def test_local_origin_success_rate_runs_with_the_split_and_envoys_default_enforcement() -> None:
    detector, table, keys = make(5, max_ejection_percent=100.0, split_external_local_origin_errors=True)
    connect_failure = Outcome(OutcomeKind.CONNECT_FAILURE)
    for i in range(100):  # alternate: the consecutive local-origin counter never reaches 5
        detector.record(keys[0], connect_failure if i % 2 else OK, 1.0)
    for key in keys[1:]:
        traffic(detector, key, successes=100, failures=0, now=1.0)
    detector.tick(10.0)
    assert ejected(table, keys[0])
    assert counter(detector, "ejections_enforced_local_origin_success_rate") == 1
    assert counter(detector, "ejections_detected_success_rate") == 0


# ---------------------------------------------------------------- scheduling and shared state


def test_tick_scheduling_helpers() -> None:
    detector, _, _ = make(interval_s=10.0)
    assert detector.interval_s == 10.0
    assert detector.next_tick_due(3.0) == 10.0  # armed by set_hosts at 0
    assert not detector.maybe_tick(9.9)
    assert detector.maybe_tick(10.5)
    assert detector.next_tick_due(10.5) == 20.5  # re-armed from when the tick ran
    unarmed = OutlierDetector(OutlierDetection(interval_s=5.0), HostStatsTable(), random.Random(0))
    assert unarmed.next_tick_due(2.0) == 7.0


def test_a_host_ejected_by_another_clusters_detector_is_left_to_its_owner() -> None:
    # Istio's outbound|9080||reviews and outbound|9080|v1|reviews share reviews-v1's state.
    table = HostStatsTable()
    config = OutlierDetection(max_ejection_percent=100.0)
    whole = OutlierDetector(config, table, random.Random(1))
    subset = OutlierDetector(config, table, random.Random(2))
    whole.set_hosts(["v1:9080", "v2:9080"], 0.0)
    subset.set_hosts(["v1:9080"], 0.0)
    eject_by_5xx(whole, "v1:9080", 0.0)
    eject_by_5xx(subset, "v1:9080", 1.0)  # already out: nothing detected here
    assert counter(subset, "ejections_detected_consecutive_5xx") == 0
    assert subset.ejected_hosts(1.0) == {}
    subset.tick(30.0)
    assert ejected(table, "v1:9080")  # not subset's ejection to end
    whole.tick(30.0)
    assert not ejected(table, "v1:9080")


def test_an_orphaned_ejection_is_returned_after_the_maximum_ejection_time() -> None:
    table = HostStatsTable()
    config = OutlierDetection(max_ejection_percent=100.0)
    dropped = OutlierDetector(config, table, random.Random(1))
    dropped.set_hosts(["a:1"], 0.0)
    eject_by_5xx(dropped, "a:1", 0.0)
    del dropped  # went away without close()
    survivor = OutlierDetector(config, table, random.Random(2))
    survivor.set_hosts(["a:1"], 0.0)
    survivor.tick(299.0)
    assert ejected(table, "a:1")
    survivor.tick(300.0)
    assert not ejected(table, "a:1")
