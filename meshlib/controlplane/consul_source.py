"""Consul as the control plane's snapshot source (``meshlib control-plane --consul ADDR``).

:class:`ConsulSnapshotSource` runs a
:class:`~meshlib.discovery.consul.source.ConsulConfigSource` (blocking
watches on the catalog, each service's health and the five L7 config-entry
kinds), compiles for the default workload (the control plane has no caller of
its own, as istiod's generic outbound view) and encodes per node group with
:func:`meshlib.xds.encode_resources`. It is the plane's ``snapshot_source``::

    source = ConsulSnapshotSource("127.0.0.1:8500")
    await source.start()                 # first sync, bounded
    async with ControlPlane(source, port=15010) as plane:
        source.attach(plane)
        await source.watch()             # until cancelled

Scaling out: replicas reading the same Consul compile the same
:class:`~meshlib.discovery.consul.state.ConsulState` into the same snapshot,
whose version is the state's content hash, and the plane's per-type versions
are content hashes too — so every replica serves identical versions, and a
client can move between replicas without a spurious update. Consul is the
source of truth; the replicas hold no state of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshlib.config.compile import DEFAULT_WORKLOAD
from meshlib.config.model import MeshSnapshot, WorkloadIdentity
from meshlib.controlplane.encoded_source import EncodedSnapshotSource
from meshlib.discovery.consul.client import ConsulClient, ConsulSettings
from meshlib.discovery.consul.source import ConsulConfigSource
from meshlib.discovery.consul.watch import WatchTiming

__all__ = ["ConsulSnapshotSource"]

log = logging.getLogger(__name__)


class ConsulSnapshotSource(EncodedSnapshotSource):
    """Consul → ``{type_url: {name: proto}}`` per client kind, republished when Consul changes."""

    def __init__(
        self,
        address: str | None = None,
        *,
        token: str | None = None,
        dc: str | None = None,
        services: Sequence[str] | None = None,
        stale: bool = True,
        overlay: Sequence[str | Path] | None = None,
        bind_address: str = "127.0.0.1",
        workload: WorkloadIdentity = DEFAULT_WORKLOAD,
        timing: WatchTiming | None = None,
        initial_sync_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(bind_address)
        self.consul = ConsulConfigSource(
            ConsulClient(ConsulSettings.resolve(address, token=token, dc=dc)),
            workload,
            self._publish,
            services=services,
            datacenter=dc,
            stale=stale,
            overlay=overlay,
            timing=timing,
            initial_sync_timeout_s=initial_sync_timeout_s,
        )
        self._task: asyncio.Task[None] | None = None

    def _publish(self, snapshot: MeshSnapshot) -> None:
        log.info("consul: version %s (%d clusters)", snapshot.version, len(snapshot.clusters))
        super()._publish(snapshot)

    # -- running ---------------------------------------------------------------------

    async def start(self) -> bool:
        """Start watching Consul and wait for the first snapshot (bounded); False if it did not come."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.consul.run(), name="meshlib-consul-source")
        return await self.consul.wait_first()

    async def _follow(self) -> None:
        """Run until cancelled; stops the watches on the way out."""
        await self.start()
        assert self._task is not None
        try:
            await asyncio.shield(self._task)
        finally:
            await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.consul.close()

    @property
    def config_errors(self) -> list[str]:
        """Watch failures and rejected config entries (kind/name/field), as ``meshlib status`` prints them."""
        errors: list[str] = self.consul.status()["last_error"]
        return errors

    def status(self) -> dict[str, Any]:
        """``config_source``, ``config_version`` (the deterministic version in force), ``config_errors``, ``consul``."""
        consul = self.consul.status()
        return {
            "config_source": "consul",
            "config_version": None if self.snapshot is None else self.snapshot.version,
            "config_warnings": list(self.config_warnings),
            "config_errors": consul["last_error"],
            "consul": consul,
        }
