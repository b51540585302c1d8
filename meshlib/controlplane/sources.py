"""Istio YAML files as the control plane's snapshot source, hot-reloaded.

:class:`FileSnapshotSource` compiles the files with
:func:`meshlib.config.load_snapshot` (the control plane has no calling
workload, so the default :class:`~meshlib.config.model.WorkloadIdentity` is
used, as istiod does for a generic outbound view) and encodes the result per
node group with :func:`meshlib.xds.encode_resources` — the groups are the
:class:`~meshlib.xds.ClientKind` values the plane's default node grouping
produces. It is the plane's ``snapshot_source``::

    source = FileSnapshotSource(["mesh/"])
    source.load()                       # raises ConfigInvalid on a bad start
    async with ControlPlane(source, port=15010) as plane:
        source.attach(plane)
        await source.watch(plane)       # until cancelled

Watching reuses :class:`meshlib.discovery.files.FileConfigSource` (polling of
the files' mtime/size fingerprints). A valid edit replaces the compiled
snapshot and calls :meth:`ControlPlane.notify_changed` (debounced push); an
invalid edit is logged with every problem as ``file:line: ...``, exposed in
the plane's ``status()["config_errors"]``, and nothing is pushed — clients
keep the last good configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshlib.config.compile import DEFAULT_WORKLOAD
from meshlib.config.model import MeshSnapshot, WorkloadIdentity
from meshlib.controlplane.encoded_source import EncodedSnapshotSource
from meshlib.discovery.files import FileConfigSource

__all__ = ["FileSnapshotSource"]

log = logging.getLogger(__name__)


class FileSnapshotSource(EncodedSnapshotSource):
    """Istio YAML ``paths`` → ``{type_url: {name: proto}}`` per client kind, republished on edits."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        bind_address: str = "127.0.0.1",
        workload: WorkloadIdentity = DEFAULT_WORKLOAD,
        poll_interval_s: float = 0.25,
    ) -> None:
        super().__init__(bind_address)
        self.paths = [str(p) for p in paths]
        self.files = FileConfigSource(self.paths, workload, self._publish, poll_interval_s=poll_interval_s)

    # -- loading -----------------------------------------------------------------

    def load(self) -> MeshSnapshot:
        """Load and compile the files now; raises :class:`~meshlib.errors.ConfigInvalid` listing every problem."""
        snapshot = self.files.load()
        self._set_snapshot(snapshot)
        return snapshot

    # -- plane integration -----------------------------------------------------------

    async def _follow(self) -> None:
        """Poll the files until cancelled."""
        await self.files.watch()

    @property
    def config_errors(self) -> list[str]:
        """The problems of the last rejected edit (``file:line: ...``); empty once a valid edit lands."""
        return [str(problem) for problem in self.files.last_problems]

    def status(self) -> dict[str, Any]:
        """``config_paths``, ``config_version`` (the version in force) and ``config_errors``."""
        return {
            "config_paths": list(self.paths),
            "config_version": None if self.snapshot is None else self.snapshot.version,
            "config_warnings": list(self.config_warnings),
            "config_errors": self.config_errors,
        }
