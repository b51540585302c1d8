"""Telemetry completion off the response path.

Finishing a span (its end attributes and status, then the SDK's span
processors) and handing a record to the metrics and the access log cost tens
of microseconds per request in Python, and none of it changes the response.
So the adapters queue that work here and hand the response back at once. It
runs in batches — at the loop's next turn once 16 requests' worth is queued
(typically while the caller's next request is on the wire), and at most 50 ms
after the first one otherwise — with the timestamps taken when each request
ended, so spans and records carry the same times as if finished inline. A
batch costs one extra event-loop turn and runs with warm caches.

Readers inside meshlib (``mesh.prometheus_text()``, the admin view's
``/stats``, OpenTelemetry reads of the Istio metrics) and ``mesh.stop()``
flush the queue first. Code that reads an
exporter directly right after a request (a test with ``InMemorySpanExporter``)
calls ``mesh.flush_telemetry()``::

    async with mesh.session() as http:
        await http.get("http://reviews:9080/")
    mesh.flush_telemetry()
    assert exporter.get_finished_spans()
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["DeferredTelemetry"]

_log = logging.getLogger("meshlib.telemetry")


# A batch is drained as soon as it is this big (one extra loop turn per batch, run while
# the caller's next request is on the wire, with warm caches); a smaller one after at most
# MAX_DELAY_S, so a quiet service still exports promptly.
BATCH = 16
MAX_DELAY_S = 0.05


class DeferredTelemetry:
    """A queue of completion work, drained in batches on the event loop (or on :meth:`flush`)."""

    __slots__ = ("_armed_on", "_drain_soon", "_owner", "_pending", "_timer")

    def __init__(self) -> None:
        self._pending: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._armed_on: asyncio.AbstractEventLoop | None = None  # the loop whose timer will drain
        self._timer: asyncio.TimerHandle | None = None
        self._drain_soon = False
        self._owner: int | None = None  # the thread whose event loop queues work

    def defer(self, work: Callable[..., None], *args: Any) -> None:
        """Run ``work(*args)`` soon on this loop; at once when no loop is running (sync callers)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._run(work, args)
            return
        pending = self._pending
        pending.append((work, args))
        if self._armed_on is not loop:  # the first item (or a new loop: tests make many)
            self._armed_on = loop
            self._owner = threading.get_ident()
            self._drain_soon = False
            self._timer = loop.call_later(MAX_DELAY_S, self.flush)
        elif len(pending) >= BATCH and not self._drain_soon:
            self._drain_soon = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Run everything queued, now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_on = None
        self._drain_soon = False
        while self._pending:
            pending, self._pending = self._pending, []
            for work, args in pending:
                self._run(work, args)

    def flush_if_owner(self) -> None:
        """:meth:`flush` when called on the thread that queues work (an exporter thread must not)."""
        if self._pending and threading.get_ident() == self._owner:
            self.flush()

    @property
    def pending(self) -> int:
        return len(self._pending)

    @staticmethod
    def _run(work: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            work(*args)
        except Exception:  # a broken exporter or sink must not take the event loop down with it
            _log.exception("meshlib: finishing telemetry failed")
