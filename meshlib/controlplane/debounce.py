"""Debouncing of config-change events before a rebuild, as istiod does before a push.

istiod merges change events until none has arrived for ``PILOT_DEBOUNCE_AFTER``
(100 ms) or the first pending one is ``PILOT_DEBOUNCE_MAX`` (10 s) old, and does
not start a push while the previous one is still running; events arriving
meanwhile are merged into the next round. :class:`Debouncer` is that rule as
pure logic over an injected clock; :class:`DebouncedTrigger` drives it on an
asyncio loop and calls the rebuild callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["DebouncedTrigger", "Debouncer"]

log = logging.getLogger(__name__)

DEBOUNCE_AFTER = 0.1
DEBOUNCE_MAX = 10.0


@dataclass(slots=True)
class Debouncer:
    """Pending-change bookkeeping: record events, ask when to flush, take them."""

    quiet: float = DEBOUNCE_AFTER
    max_delay: float = DEBOUNCE_MAX
    first: float | None = None
    last: float | None = None
    events: int = 0

    def record(self, now: float) -> None:
        if self.first is None:
            self.first = now
        self.last = now
        self.events += 1

    def deadline(self) -> float | None:
        """When the pending events must be flushed (None when nothing is pending)."""
        if self.first is None or self.last is None:
            return None
        return min(self.last + self.quiet, self.first + self.max_delay)

    def ready(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def take(self) -> int:
        """Forget the pending events (the caller flushes them); returns how many were merged."""
        merged, self.first, self.last, self.events = self.events, None, None, 0
        return merged


Rebuild = Callable[[], Awaitable[None] | None]


class DebouncedTrigger:
    """Call ``rebuild`` once per burst of :meth:`notify` calls, never two rebuilds at once."""

    def __init__(
        self,
        rebuild: Rebuild,
        *,
        quiet: float = DEBOUNCE_AFTER,
        max_delay: float = DEBOUNCE_MAX,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._rebuild = rebuild
        self._debouncer = Debouncer(quiet, max_delay)
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.rebuilds = 0

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def notify(self) -> None:
        """Record a change; must be called on the loop thread."""
        self._debouncer.record(self._now())
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drive(), name="meshlib-debounce")

    async def _drive(self) -> None:
        while (deadline := self._debouncer.deadline()) is not None:
            delay = deadline - self._now()
            if delay > 0:
                # New events only move the deadline later, so sleeping to it and re-checking is exact.
                await asyncio.sleep(delay)
                continue
            merged = self._debouncer.take()
            log.debug("rebuilding after %d merged change(s)", merged)
            try:
                result = self._rebuild()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("rebuild after config change failed; the previous snapshot stays")
            self.rebuilds += 1

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
