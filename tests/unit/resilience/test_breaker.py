"""AsyncBreaker: pybreaker-backed circuit breaker for async calls (no sleeps: fake clock + events)."""

from __future__ import annotations

import asyncio
from typing import Any

import pybreaker
import pytest

from meshlib.errors import MeshError
from meshlib.resilience.breaker import AsyncBreaker, BreakerOpen, BreakerRegistry


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder(pybreaker.CircuitBreakerListener):
    def __init__(self) -> None:
        self.changes: list[tuple[str | None, str]] = []
        self.events: list[str] = []

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        self.changes.append((old_state.name if old_state else None, new_state.name))

    def before_call(self, cb: pybreaker.CircuitBreaker, func: Any, *args: Any, **kwargs: Any) -> None:
        self.events.append("before_call")

    def success(self, cb: pybreaker.CircuitBreaker) -> None:
        self.events.append("success")

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        self.events.append(f"failure:{type(exc).__name__}")


class Boom(Exception):
    pass


class NotFound(Exception):
    pass


async def fail() -> None:
    raise Boom("down")


async def trip(breaker: AsyncBreaker) -> None:
    for _ in range(breaker.fail_max):
        with pytest.raises(Boom):
            await breaker.call(fail)
    assert breaker.state == "open"


def test_breaker_open_is_pybreaker_and_mesh_error() -> None:
    err = BreakerOpen("x", 1.0)
    assert isinstance(err, pybreaker.CircuitBreakerError)
    assert isinstance(err, MeshError)
    assert err.name == "x"


def test_decorating_sync_function_is_rejected() -> None:
    breaker = AsyncBreaker("sync")

    def sync() -> int:
        return 1

    with pytest.raises(TypeError, match="async"):
        breaker(sync)


@pytest.mark.asyncio
async def test_decorator_awaits_and_counts_failures() -> None:
    breaker = AsyncBreaker("deco", fail_max=3)
    calls = 0

    @breaker
    async def flaky(ok: bool) -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)  # really suspends: the coroutine must be awaited by the breaker
        if not ok:
            raise Boom("no")
        return "yes"

    assert await flaky(True) == "yes"
    with pytest.raises(Boom):
        await flaky(False)
    with pytest.raises(Boom):
        await flaky(False)
    assert breaker.failure_count == 2
    assert breaker.state == "closed"
    assert await flaky(True) == "yes"  # a success resets the consecutive count
    assert breaker.failure_count == 0
    assert calls == 4
    assert flaky.__name__ == "flaky"


@pytest.mark.asyncio
async def test_context_manager_counts_failures() -> None:
    breaker = AsyncBreaker("cm", fail_max=3)

    async def query(ok: bool) -> None:
        async with breaker:
            await asyncio.sleep(0)
            if not ok:
                raise Boom("db")

    await query(True)
    for _ in range(2):
        with pytest.raises(Boom):
            await query(False)
    assert breaker.failure_count == 2
    assert breaker.state == "closed"
    s = breaker.stats()
    assert (s["calls"], s["successes"], s["failures_total"]) == (3, 1, 2)


@pytest.mark.asyncio
async def test_opens_after_fail_max_and_rejects_without_calling() -> None:
    breaker = AsyncBreaker("open", fail_max=2, reset_timeout_s=30.0, clock=FakeClock())
    called = 0

    @breaker
    async def guarded() -> None:
        nonlocal called
        called += 1
        raise Boom("x")

    with pytest.raises(Boom):
        await guarded()
    assert breaker.state == "closed"
    with pytest.raises(Boom):  # the tripping call raises its own error
        await guarded()
    assert breaker.state == "open"
    assert called == 2

    with pytest.raises(BreakerOpen) as info:
        await guarded()
    assert called == 2  # not called while open
    assert info.value.retry_after_s == pytest.approx(30.0)

    entered = False
    with pytest.raises(BreakerOpen):
        async with breaker:
            entered = True
    assert entered is False
    assert breaker.stats()["rejections"] == 2


@pytest.mark.asyncio
async def test_half_open_after_reset_timeout_via_clock() -> None:
    clock = FakeClock()
    breaker = AsyncBreaker("timer", fail_max=1, reset_timeout_s=10.0, clock=clock)
    await trip(breaker)
    clock.advance(9.999)
    assert breaker.state == "open"
    with pytest.raises(BreakerOpen) as info:
        await breaker.call(fail)
    assert info.value.retry_after_s == pytest.approx(0.001)
    clock.advance(0.001)
    assert breaker.state == "half-open"


@pytest.mark.asyncio
async def test_half_open_admits_exactly_one_of_many_concurrent_callers() -> None:
    clock = FakeClock()
    breaker = AsyncBreaker("probe", fail_max=1, reset_timeout_s=5.0, clock=clock)
    await trip(breaker)
    clock.advance(5.0)

    started = asyncio.Event()
    release = asyncio.Event()
    admitted = 0

    @breaker
    async def probe() -> str:
        nonlocal admitted
        admitted += 1
        started.set()
        await release.wait()
        return "ok"

    tasks = [asyncio.create_task(probe()) for _ in range(10)]
    await started.wait()
    # let every other task run up to the breaker
    done, pending = await asyncio.wait(tasks, timeout=None, return_when=asyncio.FIRST_COMPLETED)
    while len(done) < 9:
        more, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        done |= more
    assert admitted == 1
    assert breaker.state == "half-open"
    assert all(isinstance(t.exception(), BreakerOpen) for t in done)
    assert all(t.exception().retry_after_s == 0.0 for t in done)  # type: ignore[union-attr]

    # context-manager callers are rejected too while the probe is in flight
    with pytest.raises(BreakerOpen):
        async with breaker:
            pass

    release.set()
    (probe_task,) = pending
    assert await probe_task == "ok"
    assert breaker.state == "closed"
    assert admitted == 1
    assert breaker.stats()["rejections"] == 9 + 1


@pytest.mark.asyncio
async def test_probe_success_closes() -> None:
    clock = FakeClock()
    breaker = AsyncBreaker("ok", fail_max=2, reset_timeout_s=1.0, clock=clock)
    await trip(breaker)
    clock.advance(1.0)
    async with breaker:
        assert breaker.state == "half-open"
    assert breaker.state == "closed"
    assert breaker.failure_count == 0
    # closed again: needs fail_max fresh failures to re-open
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert breaker.state == "closed"


@pytest.mark.asyncio
async def test_probe_failure_reopens_and_restarts_timeout() -> None:
    clock = FakeClock()
    breaker = AsyncBreaker("bad", fail_max=3, reset_timeout_s=10.0, clock=clock)
    await trip(breaker)
    clock.advance(10.0)
    with pytest.raises(Boom):  # one failure in half-open is enough
        await breaker.call(fail)
    assert breaker.state == "open"
    assert breaker.stats()["opened_at"] == clock.now
    clock.advance(9.0)
    with pytest.raises(BreakerOpen):
        await breaker.call(fail)
    clock.advance(1.0)
    assert breaker.state == "half-open"


@pytest.mark.asyncio
async def test_cancelled_is_neither_success_nor_failure_in_closed() -> None:
    breaker = AsyncBreaker("cancel", fail_max=2)
    with pytest.raises(Boom):
        await breaker.call(fail)
    started = asyncio.Event()

    @breaker
    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(hang())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.failure_count == 1  # not reset (no success), not incremented (no failure)
    assert breaker.state == "closed"
    s = breaker.stats()
    assert (s["successes"], s["failures_total"], s["cancellations"]) == (0, 1, 1)


@pytest.mark.asyncio
async def test_cancelled_probe_frees_the_slot() -> None:
    clock = FakeClock()
    recorder = Recorder()
    breaker = AsyncBreaker("cprobe", fail_max=1, reset_timeout_s=1.0, clock=clock, listeners=[recorder])
    await trip(breaker)
    clock.advance(1.0)
    started = asyncio.Event()

    async def hang() -> None:
        async with breaker:
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hang())
    await started.wait()
    with pytest.raises(BreakerOpen):  # slot taken
        await breaker.call(fail)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state == "half-open"  # neither closed nor re-opened
    recorder.events.clear()

    async def ok() -> int:
        return 7

    assert await breaker.call(ok) == 7  # next caller becomes the probe
    assert breaker.state == "closed"
    assert recorder.events == ["before_call", "success"]


@pytest.mark.asyncio
async def test_excluded_exceptions_are_not_failures() -> None:
    breaker = AsyncBreaker(
        "excl",
        fail_max=2,
        exclude=[NotFound, lambda e: isinstance(e, Boom) and str(e) == "business"],
    )

    async def missing() -> None:
        raise NotFound("404")

    async def business() -> None:
        raise Boom("business")

    for _ in range(5):
        with pytest.raises(NotFound):
            await breaker.call(missing)
        with pytest.raises(Boom):
            async with breaker:
                raise Boom("business")
        with pytest.raises(Boom):
            await breaker.call(business)
    assert breaker.failure_count == 0
    assert breaker.state == "closed"
    assert breaker.stats()["excluded"] == 15
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert breaker.failure_count == 1


@pytest.mark.asyncio
async def test_listener_sees_full_cycle_of_state_changes() -> None:
    clock = FakeClock()
    recorder = Recorder()
    breaker = AsyncBreaker("lst", fail_max=1, reset_timeout_s=2.0, clock=clock, listeners=[recorder])
    assert breaker.listeners == (recorder,)
    await trip(breaker)
    clock.advance(2.0)

    async def ok() -> None:
        return None

    await breaker.call(ok)
    assert recorder.changes == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
    assert recorder.events == ["before_call", "failure:Boom", "before_call", "success"]


@pytest.mark.asyncio
async def test_stale_outcomes_do_not_move_state() -> None:
    clock = FakeClock()
    breaker = AsyncBreaker("stale", fail_max=1, reset_timeout_s=1.0, clock=clock)
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> None:
        started.set()
        await release.wait()

    task = asyncio.create_task(breaker.call(slow))  # admitted while closed
    await started.wait()
    await trip(breaker)
    clock.advance(1.0)
    assert breaker.state == "half-open"
    release.set()
    await task
    assert breaker.state == "half-open"  # a closed-period success does not close the circuit


def test_invalid_settings() -> None:
    with pytest.raises(ValueError, match="fail_max"):
        AsyncBreaker("x", fail_max=0)
    with pytest.raises(ValueError, match="reset_timeout_s"):
        AsyncBreaker("x", reset_timeout_s=-1)
    with pytest.raises(TypeError, match="exclude"):
        AsyncBreaker("x", exclude=[42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="listeners"):
        AsyncBreaker("x", listeners=[object()])  # type: ignore[list-item]


@pytest.mark.asyncio
async def test_stats_content() -> None:
    clock = FakeClock()
    breaker = AsyncBreaker("stats", fail_max=2, reset_timeout_s=7.5, clock=clock)
    assert breaker.stats() == {
        "name": "stats",
        "state": "closed",
        "failures": 0,
        "fail_max": 2,
        "reset_timeout_s": 7.5,
        "opened_at": None,
        "calls": 0,
        "successes": 0,
        "failures_total": 0,
        "excluded": 0,
        "cancellations": 0,
        "rejections": 0,
    }
    await trip(breaker)
    with pytest.raises(BreakerOpen):
        await breaker.call(fail)
    s = breaker.stats()
    assert s["state"] == "open"
    assert s["failures"] == 2
    assert s["opened_at"] == clock.now
    assert (s["calls"], s["failures_total"], s["rejections"]) == (2, 2, 1)


def test_registry_same_instance_and_conflicts() -> None:
    clock = FakeClock()
    reg = BreakerRegistry(clock=clock)
    a = reg.get("db", fail_max=3, reset_timeout_s=10)
    assert reg.get("db") is a
    assert reg.get("db", fail_max=3) is a
    assert reg.get("db", reset_timeout_s=10.0) is a
    assert a.clock is clock
    assert "db" in reg
    assert len(reg) == 1
    with pytest.raises(ValueError, match="fail_max=3"):
        reg.get("db", fail_max=4)
    with pytest.raises(ValueError, match="reset_timeout_s"):
        reg.get("db", reset_timeout_s=1)
    with pytest.raises(ValueError, match="exclude"):
        reg.get("db", exclude=[KeyError])
    b = reg.get("cache")
    assert b is not a
    assert (b.fail_max, b.reset_timeout_s) == (5, 30.0)


@pytest.mark.asyncio
async def test_registry_stats() -> None:
    reg = BreakerRegistry()
    reg.get("a", fail_max=1)
    reg.get("b")
    with pytest.raises(Boom):
        await reg.get("a").call(fail)
    stats = reg.stats()
    assert list(stats) == ["a", "b"]
    assert stats["a"]["state"] == "open"
    assert stats["b"]["state"] == "closed"
