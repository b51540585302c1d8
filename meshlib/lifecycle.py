"""``async with`` for anything with ``start()`` and ``stop()``: the mesh, the control plane, certificate sources.

::

    class Poller(StartStopContext):
        async def start(self) -> None: ...
        async def stop(self) -> None: ...

    async with Poller() as poller:   # start() on entry, stop() on exit (also on an error)
        ...
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["StartStopContext"]


class StartStopContext:
    """``async with obj:`` awaits ``obj.start()`` on entry and ``obj.stop()`` on exit."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
