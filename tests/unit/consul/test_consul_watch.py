"""The blocking-query loop's rules, driven by a scripted Consul and a fake clock (no real sleeps)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from meshlib.discovery.consul.client import ConsulError, ConsulResponse
from meshlib.discovery.consul.watch import (
    BlockingWatch,
    LoopLimiter,
    WatchTiming,
    backoff_delay,
    next_index,
)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def ok(index: int, payload: str = "[]", **headers: str) -> ConsulResponse:
    return ConsulResponse(200, {"X-Consul-Index": str(index), **headers}, payload)


class ScriptedConsul:
    """Answers each request with the next scripted response (or raises the scripted error)."""

    def __init__(self, script: Sequence[ConsulResponse | ConsulError], time: FakeTime, latency_s: float = 0.0) -> None:
        self.script = list(script)
        self.time = time
        self.latency_s = latency_s
        self.requests: list[tuple[int, float, dict[str, str]]] = []

    async def __call__(
        self, path: str, params: Sequence[tuple[str, str]], index: int, wait_s: float
    ) -> ConsulResponse:
        self.requests.append((index, wait_s, dict(params)))
        self.time.now += self.latency_s
        item = self.script.pop(0)
        if isinstance(item, ConsulError):
            raise item
        return item


def make_watch(consul: ScriptedConsul, time: FakeTime, seen: list[Any], **timing: Any) -> BlockingWatch:
    return BlockingWatch(
        "/v1/health/service/web",
        consul,
        seen.append,
        timing=WatchTiming(**timing),
        rng=random.Random(7),
        clock=time.clock,
        sleep=time.sleep,
    )


async def run_steps(watch: BlockingWatch, n: int) -> None:
    for _ in range(n):
        await watch.step()


def test_next_index_rules() -> None:
    assert next_index(0, 5) == 5
    assert next_index(5, 5) == 5
    assert next_index(5, 9) == 9
    assert next_index(9, 4) == 0  # backwards → full read
    assert next_index(0, 0) == 1  # never block on 0
    assert next_index(1, 0) == 0  # backwards from 1 to 0 → reset, then 1 after the next answer


@pytest.mark.asyncio
async def test_index_sequence_follows_consul_rules() -> None:
    time = FakeTime()
    consul = ScriptedConsul([ok(5), ok(5), ok(3), ok(7), ok(0), ok(0)], time, latency_s=5.0)
    seen: list[Any] = []
    watch = make_watch(consul, time, seen)
    await run_steps(watch, 6)
    assert [r[0] for r in consul.requests] == [0, 5, 5, 0, 7, 0]
    # 3 after 5 and 0 after 7 went backwards → full reads; the second 0 is replaced by 1
    assert watch.index == 1


@pytest.mark.asyncio
async def test_wait_is_jittered_within_range_and_stale_is_sent() -> None:
    time = FakeTime()
    consul = ScriptedConsul([ok(i + 1) for i in range(20)], time, latency_s=60.0)
    watch = make_watch(consul, time, [])
    await run_steps(watch, 20)
    waits = [r[1] for r in consul.requests]
    assert all(55.0 <= w <= 60.0 for w in waits)
    assert len({round(w, 3) for w in waits}) > 10  # not one shared boundary
    assert all("stale" in r[2] for r in consul.requests)


@pytest.mark.asyncio
async def test_no_hot_loop_when_consul_answers_at_once() -> None:
    time = FakeTime()
    consul = ScriptedConsul([ok(i + 1, f'[{i}]') for i in range(12)], time)  # answers instantly, always changed
    watch = make_watch(consul, time, [])
    start = time.now
    await run_steps(watch, 12)
    # burst of 2, then one request per second: 10 paced requests take 10 s of (fake) time
    assert len(time.sleeps) == 10
    assert time.now - start == pytest.approx(10.0)
    assert all(s == pytest.approx(1.0) for s in time.sleeps)


def test_limiter_refills_while_blocked() -> None:
    limiter = LoopLimiter(2, 1.0, now=0.0)
    assert limiter.reserve(0.0) == 0.0
    assert limiter.reserve(0.0) == 0.0
    assert limiter.reserve(0.0) == pytest.approx(1.0)
    # a 57 s blocking query refilled the bucket (to its burst, no more)
    assert limiter.reserve(58.0) == 0.0
    assert limiter.reserve(58.0) == 0.0
    assert limiter.reserve(58.0) == pytest.approx(1.0)


def test_backoff_is_jittered_and_capped() -> None:
    rng = random.Random(1)
    for failures in range(1, 40):
        step = min(2.0, 0.25 * 2 ** (failures - 1))
        delay = backoff_delay(failures, rng, 0.25, 2.0)
        assert step / 2 <= delay <= step
    delays = {round(backoff_delay(6, random.Random(seed), 0.25, 2.0), 6) for seed in range(20)}
    assert len(delays) > 10  # watches that failed together retry apart


@pytest.mark.asyncio
async def test_errors_back_off_keep_last_good_and_resync_with_a_full_read() -> None:
    time = FakeTime()
    down = ConsulError("GET /v1/health/service/web: cannot reach Consul: refused")
    consul = ScriptedConsul(
        [ok(10, '[{"a": 1}]'), down, down, down, down, down, ok(12, '[{"a": 1}]'), ok(13, '[{"a": 2}]')], time
    )
    seen: list[Any] = []
    watch = make_watch(consul, time, seen, limiter_interval_s=0)  # only backoff sleeps
    await run_steps(watch, 6)
    assert watch.value == [{"a": 1}]  # last good kept
    assert watch.status.connected is False
    assert watch.status.consecutive_failures == 5
    assert "refused" in (watch.status.last_error or "")
    backoffs = time.sleeps[-5:]
    for failures, delay in enumerate(backoffs, start=1):
        step = min(2.0, 0.25 * 2 ** (failures - 1))
        assert step / 2 <= delay <= step
    await run_steps(watch, 2)
    assert consul.requests[6][0] == 0  # the first read after failures is a full one
    assert watch.status.connected is True
    assert watch.status.consecutive_failures == 0
    assert seen == [[{"a": 1}], [{"a": 2}]]  # the unchanged resync did not notify


@pytest.mark.asyncio
async def test_payload_diff_suppresses_index_only_changes() -> None:
    time = FakeTime()
    consul = ScriptedConsul([ok(1, "[1]"), ok(2, "[1]"), ok(3, "[1]"), ok(4, "[2]")], time, latency_s=30)
    seen: list[Any] = []
    watch = make_watch(consul, time, seen)
    await run_steps(watch, 4)
    assert seen == [[1], [2]]
    assert watch.status.updates == 2
    assert watch.status.last_index == 4


@pytest.mark.asyncio
async def test_empty_answer_without_leader_keeps_last_good() -> None:
    time = FakeTime()
    consul = ScriptedConsul(
        [
            ok(5, '[{"x": 1}]', **{"X-Consul-KnownLeader": "true", "X-Consul-LastContact": "3"}),
            ok(0, "[]", **{"X-Consul-KnownLeader": "false"}),
            ok(6, '[{"x": 1}]', **{"X-Consul-KnownLeader": "true"}),
        ],
        time,
        latency_s=1,
    )
    seen: list[Any] = []
    watch = make_watch(consul, time, seen)
    await run_steps(watch, 1)
    assert watch.status.last_contact_ms == 3
    await run_steps(watch, 1)
    assert watch.value == [{"x": 1}]
    assert watch.status.known_leader is False
    assert "leader" in (watch.status.last_error or "")
    await run_steps(watch, 1)
    assert seen == [[{"x": 1}]]


@pytest.mark.asyncio
async def test_http_errors_are_failures_with_the_reason() -> None:
    time = FakeTime()
    consul = ScriptedConsul(
        [ConsulResponse(403, {}, "ACL not found"), ConsulResponse(500, {}, "rpc error: No cluster leader"), ok(2)],
        time,
    )
    watch = make_watch(consul, time, [])
    await run_steps(watch, 1)
    assert watch.status.last_error is not None
    assert "403" in watch.status.last_error
    assert "permission denied" in watch.status.last_error
    await run_steps(watch, 1)
    assert "No cluster leader" in (watch.status.last_error or "")
    assert not watch.synced.is_set()
    await run_steps(watch, 1)
    assert watch.synced.is_set()


@pytest.mark.asyncio
async def test_payload_of_the_wrong_shape_is_rejected() -> None:
    time = FakeTime()
    consul = ScriptedConsul([ok(1, "[1]"), ok(2, '{"not": "a list"}'), ok(3, "not json")], time)
    seen: list[Any] = []

    def must_be_list(payload: Any) -> None:
        if not isinstance(payload, list):
            raise ValueError("want a JSON list")

    watch = make_watch(consul, time, seen)
    watch.check = must_be_list
    await run_steps(watch, 3)
    assert seen == [[1]]
    assert watch.status.consecutive_failures == 2
    assert "invalid JSON" in (watch.status.last_error or "")


def test_timing_validation() -> None:
    with pytest.raises(ValueError, match="wait range"):
        WatchTiming(wait_min_s=70, wait_max_s=60)
    with pytest.raises(ValueError, match="600"):
        WatchTiming(wait_max_s=900)
