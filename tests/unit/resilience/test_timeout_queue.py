"""TimeoutQueue: one loop timer per timeout duration, the TaskTimer contract per entry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from meshlib.resilience.timer import QueuedTimer, TimeoutQueue


def _task() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    assert task is not None
    return task


async def _wait_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    """Sleep until loop time ``when`` has passed, by a loop timer (not a polling loop)."""
    reached = asyncio.Event()
    loop.call_at(when, reached.set)
    await reached.wait()


async def _wait_for_timeout(queue: TimeoutQueue) -> tuple[bool, float, QueuedTimer]:
    """Arm a timer, block until cancelled; return (expired(), loop time of the cancel, the timer)."""
    loop = asyncio.get_running_loop()
    timer = queue.arm(_task())
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        return timer.expired(), loop.time(), timer
    finally:
        timer.cancel()
    raise AssertionError("unreachable")


@pytest.mark.asyncio
async def test_timer_fires_at_its_deadline_and_is_recognised_as_ours() -> None:
    loop = asyncio.get_running_loop()
    queue = TimeoutQueue(loop, 0.01)
    expired, at, timer = await _wait_for_timeout(queue)
    assert expired
    assert at >= timer.when - 0.001  # asyncio's own clock-resolution slack, no earlier
    assert _task().cancelling() == 0  # the cancellation was consumed
    assert not timer.expired()  # and only once
    assert len(queue) == 0


# An outside cancellation is not mistaken for a timeout: test_timer_and_ids.py runs that for both timers.


@pytest.mark.asyncio
async def test_timeout_together_with_an_outside_cancel_is_not_ours_alone() -> None:
    loop = asyncio.get_running_loop()
    queue = TimeoutQueue(loop, 0.01)
    timer = queue.arm(_task())
    task = _task()
    loop.call_at(timer.when, task.cancel)  # someone else cancels in the same loop turn
    with pytest.raises(asyncio.CancelledError):
        await asyncio.Event().wait()
    assert not timer.expired()  # a further cancellation is outstanding: it must propagate
    assert task.cancelling() == 1
    task.uncancel()


@pytest.mark.asyncio
async def test_disarmed_timer_never_fires() -> None:
    loop = asyncio.get_running_loop()
    queue = TimeoutQueue(loop, 0.001)
    timer = queue.arm(_task())
    timer.cancel()
    await _wait_until(loop, timer.when + 0.01)  # well past its deadline: we were not cancelled
    assert not timer.expired()
    assert timer.task is None


@pytest.mark.asyncio
async def test_a_disarmed_head_does_not_fire_the_timers_behind_it_early() -> None:
    loop = asyncio.get_running_loop()
    queue = TimeoutQueue(loop, 0.05)
    first = queue.arm(_task())  # the loop timer is armed for this one's deadline
    first.cancel()
    await _wait_until(loop, loop.time() + 0.02)
    expired, at, second = await _wait_for_timeout(queue)
    assert second.when >= first.when + 0.02
    assert expired
    assert at >= second.when - 0.001  # re-armed for its own deadline, not cancelled at the first's


@pytest.mark.asyncio
async def test_many_timers_of_one_timeout_fire_only_where_still_armed() -> None:
    loop = asyncio.get_running_loop()
    queue = TimeoutQueue(loop, 0.02)
    finish = asyncio.Event()
    results: dict[int, tuple[bool, float, float]] = {}

    async def worker(n: int) -> None:
        timer = queue.arm(_task())
        try:
            if n % 2 == 0:
                await finish.wait()  # completes in time: disarms
                results[n] = (False, loop.time(), timer.when)
            else:
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            results[n] = (timer.expired(), loop.time(), timer.when)
        finally:
            timer.cancel()

    tasks = []
    for n in range(40):
        tasks.append(asyncio.create_task(worker(n)))
        if n % 10 == 9:
            await asyncio.sleep(0)  # spread the arrivals over several loop turns
    await asyncio.sleep(0)
    finish.set()
    await asyncio.gather(*tasks)
    for n, (expired, at, when) in results.items():
        if n % 2 == 0:
            assert not expired
            assert at < when
        else:
            assert expired
            assert at >= when - 0.001
    assert len(results) == 40
    assert len(queue) == 0


@pytest.mark.asyncio
async def test_queues_of_different_timeouts_fire_independently() -> None:
    loop = asyncio.get_running_loop()
    short = TimeoutQueue(loop, 0.01)
    long = TimeoutQueue(loop, 0.04)
    # The long ones armed first: each queue keeps its own order and timer.
    outcomes = await asyncio.gather(
        _wait_for_timeout(long), _wait_for_timeout(short), _wait_for_timeout(long), _wait_for_timeout(short)
    )
    for expired, at, timer in outcomes:
        assert expired
        assert at >= timer.when - 0.001
    short_done = max(at for _, at, timer in outcomes if timer.when < outcomes[0][2].when)
    long_done = min(outcomes[0][1], outcomes[2][1])
    assert short_done < long_done


@pytest.mark.asyncio
async def test_disarmed_entries_are_dropped_as_new_ones_arrive() -> None:
    loop = asyncio.get_running_loop()
    queue = TimeoutQueue(loop, 60.0)
    for _ in range(1000):
        queue.arm(_task()).cancel()
    assert len(queue) == 1  # each arm dropped the disarmed head before appending
    live = queue.arm(_task())
    queue.arm(_task()).cancel()
    queue.arm(_task()).cancel()
    assert len(queue) == 3  # a live head keeps what is behind it until it goes
    live.cancel()
    queue.arm(_task()).cancel()
    assert len(queue) == 1


def test_nan_timeout_is_refused() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="NaN"):
            TimeoutQueue(loop, float("nan"))
    finally:
        loop.close()


def test_the_queue_reads_monotonic_only_where_the_loop_does() -> None:
    import time

    from meshlib.resilience.timer import keeps_monotonic_time

    class OwnClock(asyncio.SelectorEventLoop):
        def time(self) -> float:
            return 42.0

    stock, own = asyncio.new_event_loop(), OwnClock()
    try:
        assert keeps_monotonic_time(stock)
        assert not keeps_monotonic_time(own)
        stock.time = lambda: 7.0  # type: ignore[method-assign]  # a test's fake clock on the instance
        assert not keeps_monotonic_time(stock)

        async def arm_on(loop: asyncio.AbstractEventLoop) -> float:
            return TimeoutQueue(loop, 1.0).arm(asyncio.current_task()).when  # type: ignore[arg-type]

        assert own.run_until_complete(arm_on(own)) == 43.0  # the loop's own clock, not time.monotonic()
        del stock.time
        before = time.monotonic()
        assert before + 1.0 <= stock.run_until_complete(arm_on(stock)) <= time.monotonic() + 1.0
    finally:
        stock.close()
        own.close()
