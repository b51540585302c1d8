"""The lifecycle the certificate sources share: ``async with``, one background task, subscribers.

:class:`~meshlib.lifecycle.StartStopContext` turns ``start()``/``stop()`` into ``async with``.
:class:`BackgroundCertificateSource` is the base of the sources that keep their bundle fresh with
one background task (file polling, CA renewal, a Workload API stream): it holds the current
bundle and the subscribers, starts the task once and cancels it on ``stop()``. A subclass writes
``start()`` (load the first bundle, then ``self._start_task(self._poll, "name")``), installs new
bundles with ``self._bundle = bundle`` and ``self._subscribers.notify(bundle)``, and says what is
missing in :meth:`BackgroundCertificateSource._missing_certificate` for ``current()``'s error.

Example::

    class PolledSource(BackgroundCertificateSource):
        async def start(self) -> None:
            self._bundle = load_bundle()
            self._start_task(self._poll, "meshlib-polled-source")

        async def _poll(self) -> None:
            while True:
                await asyncio.sleep(60)
                self._bundle = load_bundle()
                self._subscribers.notify(self._bundle)

        def _missing_certificate(self) -> str:
            return "nothing polled yet"

    async with PolledSource() as source:
        source.current()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from meshlib.lifecycle import StartStopContext
from meshlib.security.bundle import CertBundle, Subscribers
from meshlib.security.errors import NoCertificateYet


class BackgroundCertificateSource(StartStopContext):
    """A :class:`~meshlib.security.bundle.CertificateSource` kept fresh by one background task."""

    def __init__(self) -> None:
        self._bundle: CertBundle | None = None
        self._subscribers = Subscribers()
        self._task: asyncio.Task[None] | None = None

    def current(self) -> CertBundle:
        """The current bundle; :class:`NoCertificateYet` (saying why) when there is none yet."""
        if self._bundle is None:
            raise NoCertificateYet(self._missing_certificate())
        return self._bundle

    def subscribe(self, callback: Callable[[CertBundle], None]) -> Callable[[], None]:
        """Call ``callback(bundle)`` after each rotation; returns a function that unsubscribes."""
        return self._subscribers.add(callback)

    async def stop(self) -> None:
        """Cancel the background task and wait for it; ``current()`` keeps the last bundle."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _start_task(self, run: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        """Start ``run()`` as the background task unless one is running already."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(run(), name=name)

    def _missing_certificate(self) -> str:
        """The message of ``current()``'s :class:`NoCertificateYet` before the first bundle."""
        raise NotImplementedError
