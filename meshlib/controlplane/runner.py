"""``meshlib control-plane``: serve Istio YAML files over ADS until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from meshlib.controlplane.plane import ControlPlane
from meshlib.controlplane.sources import FileSnapshotSource

if TYPE_CHECKING:
    from meshlib.controlplane.consul_source import ConsulSnapshotSource
    from meshlib.security.plane_security import ControlPlaneSecurity

__all__ = ["run_control_plane"]

log = logging.getLogger(__name__)


async def run_control_plane(
    paths: Sequence[str | Path],
    *,
    port: int = 15010,
    status_port: int | None = 15014,
    bind_address: str = "127.0.0.1",
    host: str = "127.0.0.1",
    poll_interval_s: float = 0.25,
    on_ready: Callable[[ControlPlane], None] | None = None,
    stop: asyncio.Event | None = None,
    source: FileSnapshotSource | ConsulSnapshotSource | None = None,
    security: ControlPlaneSecurity | None = None,
) -> None:
    """Serve ``paths`` (files or directories of Istio YAML) until SIGINT/SIGTERM or ``stop`` is set.

    ``host`` is where ADS and ``/status`` listen; ``bind_address`` is where
    Envoy clients' outbound listeners bind. Port 0 picks a free port (see
    ``on_ready``, called with the started plane). Raises
    :class:`~meshlib.errors.ConfigInvalid` when the files are invalid at start;
    later invalid edits are reported in ``/status`` and not pushed. ``source``
    replaces the file source (``paths`` is then ignored), e.g. a
    :class:`~meshlib.controlplane.consul_source.ConsulSnapshotSource`, whose
    first sync is awaited (bounded) before the plane starts. ``security`` turns on
    mTLS, node-id authorization and the CA (:mod:`meshlib.security.plane_security`).
    """
    if source is None:
        source = FileSnapshotSource(paths, bind_address=bind_address, poll_interval_s=poll_interval_s)
        snapshot = source.load()
        log.info("loaded %s: version %s", ", ".join(source.paths), snapshot.version)
    elif not isinstance(source, FileSnapshotSource):
        await source.start()
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread / Windows
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    plane = ControlPlane(source, host=host, port=port, status_port=status_port, security=security)
    try:
        # Not ``async with``: a failed start (status port in use) must still stop the started ADS server.
        await plane.start()
        source.attach(plane)
        watcher = loop.create_task(source.watch(), name="meshlib-config-watch")
        try:
            if on_ready is not None:
                on_ready(plane)
            await stop.wait()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    finally:
        try:
            await plane.stop()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
