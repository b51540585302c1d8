"""A cheap cancel-the-task-at-a-deadline timer for the request path.

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
"""

from __future__ import annotations

import asyncio


class TaskTimer:
    __slots__ = ("_fired", "_handle", "_task")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("TaskTimer must be armed from inside a task")
        self._task = task
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
