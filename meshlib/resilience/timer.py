"""Cheap cancel-the-task-at-a-deadline timers for the request path.

``asyncio.timeout()`` costs about 9 µs per use on a slow machine (a Timeout
object, task bookkeeping, a context manager protocol); one
``loop.call_at`` costs a fraction of that. :class:`TaskTimer` arms one timer
handle that cancels the current task, and remembers that it did so, so the
caller can tell its own timeout from a cancellation that came from outside.

Usage::

    timer = TaskTimer(loop, loop.time() + 0.5)
    try:
        result = await work()
    except asyncio.CancelledError:
        if not timer.expired():   # not ours: propagate
            raise
        ...                       # our timeout
    finally:
        timer.cancel()

Most request timeouts are a fixed duration from now (the route timeout, the
per-try timeout), so their deadlines arrive in increasing order. For those a
:class:`TimeoutQueue` — one per distinct duration and event loop — keeps its
timers in a deque in arrival order behind a *single* armed loop timer: arming
is an append instead of a ``call_at`` (a handle object, a heap push, and the
heap's later clean-up of the cancelled handle), disarming clears one
attribute, and disarmed entries are dropped from the head as they are met.
``queue.arm(task)`` returns a :class:`QueuedTimer` with the same
``cancel()`` / ``expired()`` contract as :class:`TaskTimer`. A deadline that
is not "fixed duration from now" (a propagated deadline) uses
:class:`TaskTimer`.

One difference in timing, within a single loop iteration only: when several
entries of a queue are overdue at once (the loop was blocked), they are all
cancelled by the one callback, at the position of the earliest in that
iteration's run of due timers, rather than each at its own position among
other due ``call_at`` handles. No entry fires earlier than its deadline.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from typing import Any

# asyncio runs a timer handle once ``when < loop.time() + clock resolution``; a queue
# expires its entries by the same rule, so they fire when a call_at handle would.
_CLOCK_RESOLUTION = time.get_clock_info("monotonic").resolution


def keeps_monotonic_time(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop.time()`` is asyncio's own ``time.monotonic()``, replaced neither on the loop's class nor
    on the loop itself: then ``time.monotonic()`` (a C call, looked up on the module each time, so a patched
    ``time.monotonic`` is followed as the loop follows it) reads the same clock without a Python frame."""
    # Through the bound method, not the loop's __dict__: reading that makes CPython give the loop a real dict
    # for good, and every attribute read of the loop's own code (several per request) takes the slow path.
    return getattr(loop.time, "__func__", None) is asyncio.BaseEventLoop.time


class TaskTimer:
    __slots__ = ("_fired", "_handle", "_task", "when")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("TaskTimer must be armed from inside a task")
        self._task = task
        self.when = when  # the deadline, in loop time
        self._fired = False
        self._handle = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._fired = True
        self._task.cancel()

    def cancel(self) -> None:
        """Disarm (idempotent). Call on every exit path."""
        self._handle.cancel()

    def expired(self) -> bool:
        """True if this timer cancelled the task; consumes that cancellation request.

        Returns False for a cancellation that came from elsewhere (the caller
        was cancelled, or another timer fired), which must propagate.
        """
        if not self._fired:
            return False
        self._fired = False
        # Our cancel() counted one request; a further outstanding one is someone else's.
        return self._task.uncancel() == 0


class QueuedTimer:
    """One armed timer of a :class:`TimeoutQueue`; the same contract as :class:`TaskTimer`."""

    __slots__ = ("fired", "task", "when")

    def __init__(self, task: asyncio.Task[Any], when: float) -> None:
        self.task: asyncio.Task[Any] | None = task  # None once disarmed or fired
        self.when = when  # the deadline, in loop time
        self.fired: asyncio.Task[Any] | None = None  # the task this timer cancelled, until expired() reads it

    def cancel(self) -> None:
        """Disarm (idempotent). Call on every exit path; the queue drops the entry lazily."""
        self.task = None

    def expired(self) -> bool:
        """True if this timer cancelled the task; consumes that cancellation request (see TaskTimer)."""
        task = self.fired
        if task is None:
            return False
        self.fired = None
        return task.uncancel() == 0


class TimeoutQueue:
    """Timers of one fixed duration on one event loop, in deadline (= arrival) order.

    At most one loop timer is armed, for the earliest entry that was live when
    it was armed. When it fires, every live entry whose deadline has come
    cancels its task, disarmed entries met on the way are dropped, and the
    loop timer is re-armed for the first live entry left. ``arm`` also drops
    disarmed entries at the head, so the deque stays about as long as the
    number of timers in flight.
    """

    __slots__ = ("_entries", "_handle", "_loop", "_monotonic", "timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        if math.isnan(timeout):  # NaN would break the deadline order
            raise ValueError("a timeout queue needs a timeout, got NaN")
        self._loop = loop
        self._monotonic = keeps_monotonic_time(loop)  # checked when the queue is made (one per loop and duration)
        self.timeout = timeout
        self._entries: deque[QueuedTimer] = deque()
        self._handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """Entries held, disarmed ones not yet dropped included (for tests and diagnostics)."""
        return len(self._entries)

    def arm(self, task: asyncio.Task[Any]) -> QueuedTimer:
        """Cancel ``task`` ``timeout`` seconds from now unless the returned timer is disarmed first."""
        entries = self._entries
        while entries and entries[0].task is None:
            entries.popleft()
        entry = QueuedTimer(task, (time.monotonic() if self._monotonic else self._loop.time()) + self.timeout)
        entries.append(entry)
        if self._handle is None:
            self._handle = self._loop.call_at(entry.when, self._fire)
        return entry

    def _fire(self) -> None:
        self._handle = None
        entries = self._entries
        limit = self._loop.time() + _CLOCK_RESOLUTION
        while entries:
            entry = entries[0]
            task = entry.task
            if task is not None:
                if entry.when >= limit:
                    self._handle = self._loop.call_at(entry.when, self._fire)
                    return
                entry.task = None
                entry.fired = task
                task.cancel()
            entries.popleft()

    def __repr__(self) -> str:
        return f"TimeoutQueue(timeout={self.timeout!r}, entries={len(self._entries)})"
