"""Ready-made ways to run a :class:`ConsulEmulator` in tests.

- ``async with consul_emulator(**options) as consul:`` — in the running event
  loop (for async tests whose clients are async too).
- ``with consul_emulator_in_thread(**options) as consul:`` — in a background
  thread with its own loop, so blocking clients (py-consul's ``consul.Consul``,
  ``requests``) can call it from a sync test, or from an async test without
  stalling the emulator. Control calls that are coroutines are run with
  ``consul.call(coro_fn, *args)``.

``CONSUL_HTTP_ADDR`` is set to the emulator's address inside both blocks (and
restored afterwards) when ``set_env=True`` (the default), so code that reads
the environment, like every Consul client, finds it.

>>> import consul as pyconsul                                   # doctest: +SKIP
>>> with consul_emulator_in_thread() as emu:                    # doctest: +SKIP
...     client = pyconsul.Consul(host=emu.host, port=emu.port)
...     client.agent.service.register("web", port=8080)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

from meshlib.testing.consul.emulator import ConsulEmulator

T = TypeVar("T")


@contextlib.contextmanager
def _env(address: str, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    previous = os.environ.get("CONSUL_HTTP_ADDR")
    os.environ["CONSUL_HTTP_ADDR"] = address
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("CONSUL_HTTP_ADDR", None)
        else:
            os.environ["CONSUL_HTTP_ADDR"] = previous


@contextlib.asynccontextmanager
async def consul_emulator(*, host: str = "127.0.0.1", port: int = 0, set_env: bool = True,
                          ssl_context: ssl.SSLContext | None = None,
                          **options: Any) -> AsyncIterator[ConsulEmulator]:
    """A started emulator in this event loop; ``options`` go to :class:`ConsulEmulator`."""
    emulator = ConsulEmulator(**options)
    await emulator.start(host, port, ssl_context=ssl_context)
    try:
        with _env(emulator.address, set_env):
            yield emulator
    finally:
        await emulator.stop()


class ThreadedEmulator:
    """A :class:`ConsulEmulator` running in its own thread and event loop.

    Methods of the emulator can be called on this object directly; they run in
    the emulator's loop (coroutines are awaited there) and return the result,
    so a sync test can drive it safely:

    >>> consul.add_service("web", 8080)                  # doctest: +SKIP
    >>> consul.go_down("no-leader"); consul.come_back()  # doctest: +SKIP
    """

    def __init__(self, emulator: ConsulEmulator, loop: asyncio.AbstractEventLoop) -> None:
        self.emulator = emulator
        self.loop = loop

    @property
    def address(self) -> str:
        return self.emulator.address

    @property
    def host(self) -> str:
        return self.emulator.host

    @property
    def port(self) -> int:
        return self.emulator.port

    @property
    def url(self) -> str:
        return self.emulator.url

    def call(self, fn: Callable[..., Awaitable[T]] | Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run an emulator method in its loop and return the result (coroutines are awaited)."""

        async def run() -> T:
            result = fn(*args, **kwargs)
            if asyncio.iscoroutine(result):
                return await result  # type: ignore[no-any-return]
            return result  # type: ignore[return-value]

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.emulator, name)
        if not callable(attribute):
            return attribute

        def in_emulator_thread(*args: Any, **kwargs: Any) -> Any:
            return self.call(attribute, *args, **kwargs)

        return in_emulator_thread


@contextlib.contextmanager
def consul_emulator_in_thread(*, host: str = "127.0.0.1", port: int = 0, set_env: bool = True,
                              ssl_context: ssl.SSLContext | None = None,
                              **options: Any) -> Iterator[ThreadedEmulator]:
    """A started emulator in a background thread (see the module docstring)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    thread = threading.Thread(target=_serve, args=(loop, ready), name="consul-emulator", daemon=True)
    thread.start()
    ready.wait()

    async def start() -> ConsulEmulator:
        emulator = ConsulEmulator(**options)
        await emulator.start(host, port, ssl_context=ssl_context)
        return emulator

    emulator = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        with _env(emulator.address, set_env):
            yield ThreadedEmulator(emulator, loop)
    finally:
        asyncio.run_coroutine_threadsafe(emulator.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    loop.run_forever()
