"""Telemetry completion off the response path.

Finishing a span (its end attributes and status, then the SDK's span
processors) and handing a record to the metrics and the access log cost tens
of microseconds per request in Python, and none of it changes the response.
So the adapters queue that work here and hand the response back at once; it
runs at the event loop's next turn — typically while the caller's next request
is on the wire — with the timestamps taken when the request ended, so spans
and records carry the same times as if they had been finished inline.

Readers inside meshlib (``mesh.prometheus_text()``, ``mesh.stats()``, the
admin view) and ``mesh.stop()`` flush the queue first. Code that reads an
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


class DeferredTelemetry:
    """A queue of completion work drained once per event-loop turn (or on :meth:`flush`)."""

    __slots__ = ("_owner", "_pending", "_scheduled_on")

    def __init__(self) -> None:
        self._pending: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        self._owner: int | None = None  # the thread whose event loop queues work

    def defer(self, work: Callable[..., None], *args: Any) -> None:
        """Run ``work(*args)`` at the next loop turn; at once when no loop is running (sync callers)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._run(work, args)
            return
        self._pending.append((work, args))
        if self._scheduled_on is not loop:  # one drain per turn, and again on a new loop (tests make many)
            self._scheduled_on = loop
            self._owner = threading.get_ident()
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Run everything queued, now."""
        self._scheduled_on = None
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
