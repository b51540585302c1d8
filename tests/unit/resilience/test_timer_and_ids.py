"""The timers tell their own timeout from outside cancellation; request ids are valid UUIDv4s."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest

from meshlib.request_id import new_request_id
from meshlib.resilience.timer import QueuedTimer, TaskTimer, TimeoutQueue


@pytest.mark.asyncio
async def test_timer_fires_and_is_recognised_as_ours() -> None:
    loop = asyncio.get_running_loop()
    never = asyncio.Event()
    timer = TaskTimer(loop, loop.time() + 0.01)
    with pytest.raises(asyncio.CancelledError):
        await never.wait()
    assert timer.expired()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


def _task_timer(loop: asyncio.AbstractEventLoop) -> TaskTimer:
    return TaskTimer(loop, loop.time() + 60)


def _queued_timer(loop: asyncio.AbstractEventLoop) -> QueuedTimer:
    task = asyncio.current_task()
    assert task is not None
    return TimeoutQueue(loop, 60.0).arm(task)


@pytest.mark.asyncio
@pytest.mark.parametrize("arm", [_task_timer, _queued_timer], ids=["TaskTimer", "TimeoutQueue"])
async def test_outside_cancellation_is_not_mistaken_for_timeout(
    arm: Callable[[asyncio.AbstractEventLoop], TaskTimer | QueuedTimer],
) -> None:
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    verdict: list[bool] = []

    async def worker() -> None:
        timer = arm(loop)
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            verdict.append(timer.expired())
            raise
        finally:
            timer.cancel()

    task = asyncio.create_task(worker())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert verdict == [False]


@pytest.mark.asyncio
async def test_disarmed_timer_never_fires() -> None:
    loop = asyncio.get_running_loop()
    timer = TaskTimer(loop, loop.time() + 0.001)
    timer.cancel()
    fired = asyncio.Event()
    loop.call_at(loop.time() + 0.01, fired.set)
    await fired.wait()  # past the timer's deadline: we were not cancelled
    assert not timer.expired()


def test_request_ids_are_unique_uuid4() -> None:
    ids = {new_request_id() for _ in range(5000)}
    assert len(ids) == 5000
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == value
    # Every random digit takes every value (no position is stuck, none borrowed from a neighbour);
    # the version digit is always 4 and the variant digit one of 8, 9, a, b.
    for position in range(36):
        seen = {value[position] for value in ids}
        if position in (8, 13, 18, 23):
            assert seen == {"-"}
        elif position == 14:
            assert seen == {"4"}
        elif position == 19:
            assert seen == set("89ab")
        else:
            assert seen == set("0123456789abcdef"), position


def test_ids_made_before_a_fork_are_not_handed_out_after_it() -> None:
    from meshlib import request_id

    new_request_id()  # a batch is now waiting
    waiting = set(request_id._ready)
    assert waiting
    request_id.reseed_after_fork()  # what a forked child runs
    after = {new_request_id() for _ in range(len(waiting))}
    assert not after & waiting
