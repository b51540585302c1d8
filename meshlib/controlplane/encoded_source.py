"""What the control plane's snapshot sources share: one compiled snapshot, encoded per node group on demand.

:class:`EncodedSnapshotSource` is the plane's ``snapshot_source`` protocol for a
source that compiles a :class:`~meshlib.config.model.MeshSnapshot`: calling it
with a node group (a :class:`~meshlib.xds.ClientKind` value) returns that group's
resources, encoded once per snapshot with :func:`meshlib.xds.encode_resources`.
The file source (:mod:`meshlib.controlplane.sources`) and the Consul source
(:mod:`meshlib.controlplane.consul_source`) build on it.
"""

from __future__ import annotations

import logging
from typing import Any

from meshlib.config.model import MeshSnapshot
from meshlib.controlplane.cache import Resources
from meshlib.controlplane.plane import ControlPlane
from meshlib.xds import ClientKind, encode_resources

__all__ = ["EncodedSnapshotSource", "not_served"]

log = logging.getLogger(__name__)


def not_served(snapshot: MeshSnapshot) -> list[str]:
    """What ``snapshot`` configures that the control plane does not serve to its clients, one line each.

    PeerAuthentication and AuthorizationPolicy are inbound policy: istiod expresses them as inbound
    listeners, which this control plane does not emit. A workload enforces them from its own Istio
    YAML (``Mesh.from_files``); proxyless gRPC servers get them through
    :func:`meshlib.grpc.proxyless.with_server_listeners` (``mtls=``, ``http_filters=``).
    """
    security = snapshot.security
    where = "not served over xDS (no inbound listeners are emitted); enforce it in the workload's own mesh " \
            "(Mesh.from_files) or pass it to with_server_listeners for proxyless gRPC servers"
    lines = [f"{p.file}:{p.line}: PeerAuthentication {p.ref}: {where}" for p in security.peer_authentication]
    lines += [
        f"{p.origin.file}:{p.origin.line}: AuthorizationPolicy {p.origin.ref}: {where}" for p in security.authorization
    ]
    return lines


class EncodedSnapshotSource:
    """The current snapshot, its per-group encodings, and the plane to notify when it changes."""

    def __init__(self, bind_address: str) -> None:
        self.bind_address = bind_address
        self.snapshot: MeshSnapshot | None = None
        self._plane: ControlPlane | None = None
        self._encoded: dict[str, Resources] = {}  # per group, for the current snapshot
        self.config_warnings: list[str] = []  # what the snapshot in force configures that is not served

    def _set_snapshot(self, snapshot: MeshSnapshot) -> None:
        self.snapshot = snapshot
        self._encoded = {}
        warnings = not_served(snapshot)
        if warnings != self.config_warnings:
            for line in warnings:
                log.warning("%s", line)
        self.config_warnings = warnings

    def _publish(self, snapshot: MeshSnapshot) -> None:
        """A new valid snapshot: keep it and ask the plane for a debounced push."""
        self._set_snapshot(snapshot)
        if self._plane is not None:
            self._plane.notify_changed()

    def attach(self, plane: ControlPlane) -> None:
        """Notify ``plane`` on every new snapshot and add this source's :meth:`status` keys to its ``status()``."""
        if plane is self._plane:
            return
        self._plane = plane
        plane.add_status_extra(self.status)

    async def watch(self, plane: ControlPlane | None = None) -> None:
        """Follow the configuration until cancelled (attaching ``plane`` first, if given)."""
        if plane is not None:
            self.attach(plane)
        await self._follow()

    async def _follow(self) -> None:
        """Keep the snapshot current until cancelled (each source says from where)."""
        raise NotImplementedError

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
