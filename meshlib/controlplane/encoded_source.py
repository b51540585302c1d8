"""What the control plane's snapshot sources share: one compiled snapshot, encoded per node group on demand.

:class:`EncodedSnapshotSource` is the plane's ``snapshot_source`` protocol for a
source that compiles a :class:`~meshlib.config.model.MeshSnapshot`: calling it
with a node group (a :class:`~meshlib.xds.ClientKind` value) returns that group's
resources, encoded once per snapshot with :func:`meshlib.xds.encode_resources`.
The file source (:mod:`meshlib.controlplane.sources`) and the Consul source
(:mod:`meshlib.controlplane.consul_source`) build on it.
"""

from __future__ import annotations

from typing import Any

from meshlib.config.model import MeshSnapshot
from meshlib.controlplane.cache import Resources
from meshlib.controlplane.plane import ControlPlane
from meshlib.xds import ClientKind, encode_resources

__all__ = ["EncodedSnapshotSource"]


class EncodedSnapshotSource:
    """The current snapshot, its per-group encodings, and the plane to notify when it changes."""

    def __init__(self, bind_address: str) -> None:
        self.bind_address = bind_address
        self.snapshot: MeshSnapshot | None = None
        self._plane: ControlPlane | None = None
        self._encoded: dict[str, Resources] = {}  # per group, for the current snapshot

    def _set_snapshot(self, snapshot: MeshSnapshot) -> None:
        self.snapshot = snapshot
        self._encoded = {}

    def _publish(self, snapshot: MeshSnapshot) -> None:
        """A new valid snapshot: keep it and ask the plane for a debounced push."""
        self._set_snapshot(snapshot)
        if self._plane is not None:
            self._plane.notify_changed()

    def attach(self, plane: ControlPlane) -> None:
        """Notify ``plane`` on every new snapshot and add this source's :meth:`status` keys to its ``status()``."""
        self._plane = plane
        plane.add_status_extra(self.status)

    def status(self) -> dict[str, Any]:
        """``config_version`` and the source's own keys (each source says which)."""
        raise NotImplementedError

    # -- the snapshot_source protocol ---------------------------------------------

    def __call__(self, group: str) -> Resources | None:
        """The resources for a node group (a :class:`ClientKind` value; unknown groups get Envoy's shapes)."""
        if self.snapshot is None:
            return None
        found = self._encoded.get(group)
        if found is None:
            try:
                kind = ClientKind(group)
            except ValueError:
                kind = ClientKind.ENVOY
            found = self._encoded[group] = encode_resources(self.snapshot, kind, bind_address=self.bind_address)
        return found
