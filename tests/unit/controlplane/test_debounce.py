"""Debouncing: 100 ms quiet period, 10 s maximum delay (istiod's PILOT_DEBOUNCE_AFTER/MAX)."""

from __future__ import annotations

import asyncio

import pytest

from meshlib.controlplane.debounce import DebouncedTrigger, Debouncer


def test_nothing_pending_means_no_deadline() -> None:
    d = Debouncer()
    assert d.deadline() is None
    assert not d.ready(100.0)


def test_quiet_period_restarts_with_each_event() -> None:
    d = Debouncer(quiet=0.1, max_delay=10.0)
    d.record(0.0)
    d.record(0.05)
    assert not d.ready(0.149)
    assert d.ready(0.151)
    assert d.take() == 2
    assert d.deadline() is None


def test_max_delay_bounds_a_continuous_stream_of_events() -> None:
    d = Debouncer(quiet=0.1, max_delay=10.0)
    now = 0.0
    flushed_at = None
    while now < 20.0:
        d.record(now)
        now = round(now + 0.05, 2)
        if d.ready(now):
            flushed_at = now
            break
    assert flushed_at == 10.0
    assert d.take() == 200


def test_after_a_flush_a_new_burst_starts_its_own_max_window() -> None:
    d = Debouncer(quiet=0.1, max_delay=1.0)
    d.record(0.0)
    d.take()
    d.record(5.0)
    assert d.deadline() == pytest.approx(5.1)


@pytest.mark.asyncio
async def test_trigger_merges_a_burst_into_one_rebuild() -> None:
    done = asyncio.Event()
    calls = []

    async def rebuild() -> None:
        calls.append(1)
        done.set()

    trigger = DebouncedTrigger(rebuild, quiet=0.02, max_delay=1.0)
    for _ in range(5):
        trigger.notify()
    async with asyncio.timeout(5):
        await done.wait()
    assert calls == [1]
    await trigger.close()


@pytest.mark.asyncio
async def test_events_during_a_rebuild_cause_one_more_rebuild() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    second = asyncio.Event()
    calls = 0

    async def rebuild() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await release.wait()
        else:
            second.set()

    trigger = DebouncedTrigger(rebuild, quiet=0.01, max_delay=1.0)
    trigger.notify()
    async with asyncio.timeout(5):
        await started.wait()
        trigger.notify()
        trigger.notify()
        release.set()
        await second.wait()
    assert calls == 2
    await trigger.close()


@pytest.mark.asyncio
async def test_a_failing_rebuild_does_not_stop_the_trigger() -> None:
    failed = asyncio.Event()
    ok = asyncio.Event()
    calls = 0

    def rebuild() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            failed.set()
            raise RuntimeError("bad config")
        ok.set()

    trigger = DebouncedTrigger(rebuild, quiet=0.01)
    trigger.notify()
    async with asyncio.timeout(5):
        await failed.wait()
        trigger.notify()
        await ok.wait()
    await trigger.close()
