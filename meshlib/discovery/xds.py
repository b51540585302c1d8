"""An xDS management server as a configuration source (``Mesh.from_xds``).

The source owns a :class:`~meshlib.xds.client.XdsClient` and publishes every
consistent snapshot it assembles into the mesh. Like Envoy's init manager,
:meth:`XdsConfigSource.start` waits for the first snapshot — bounded by the
initial fetch timeout — so ``async with Mesh.from_xds(...)`` yields a
configured mesh; if the server is unreachable the mesh starts with no
configuration and the client keeps trying in the background.

The node is built the way istiod expects a workload's: ``id``, ``cluster``,
``locality``, ``user_agent_name`` "meshlib" and metadata ``MESHLIB_CLIENT``
(so meshlib's control plane sends meshlib's resource shapes), ``NAMESPACE``
and ``LABELS``. With no address, the server and node come from the gRPC
bootstrap (``GRPC_XDS_BOOTSTRAP`` / ``GRPC_XDS_BOOTSTRAP_CONFIG``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from meshlib import __version__ as _meshlib_version
from meshlib.config.model import Locality, MeshSnapshot, WorkloadIdentity
from meshlib.xds.bootstrap import load_bootstrap
from meshlib.xds.channel_creds import XdsChannelCredentials
from meshlib.xds.client import Protocol, XdsClient
from meshlib.xds.clients import MESHLIB_METADATA_KEY, MESHLIB_USER_AGENT

if TYPE_CHECKING:
    from meshlib.mesh import Mesh

__all__ = ["XdsConfigSource", "build_node", "xds_source_of"]

log = logging.getLogger("meshlib.xds")


def build_node(
    node_id: str,
    *,
    cluster: str = "",
    namespace: str = "default",
    labels: Mapping[str, str] | None = None,
    locality: Locality | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Any:
    """An ``envoy.config.core.v3.Node`` for a meshlib workload (istiod-style metadata)."""
    node = base_pb2.Node(
        id=node_id,
        cluster=cluster,
        user_agent_name=MESHLIB_USER_AGENT,
        user_agent_version=_meshlib_version,
    )
    if locality is not None:
        node.locality.region, node.locality.zone, node.locality.sub_zone = (
            locality.region,
            locality.zone,
            locality.subzone,
        )
    fields: dict[str, Any] = dict(metadata or {})
    fields[MESHLIB_METADATA_KEY] = True
    fields.setdefault("NAMESPACE", namespace)
    if labels:
        fields.setdefault("LABELS", dict(labels))
    json_format.ParseDict(fields, node.metadata)
    return node


class XdsConfigSource:
    """Runs an xDS client for a mesh and publishes its snapshots."""

    def __init__(
        self,
        address: str | None,
        workload: WorkloadIdentity,
        publish: Callable[[MeshSnapshot], None],
        *,
        node_id: str | None = None,
        protocol: Protocol = "sotw",
        initial_fetch_timeout_s: float = 15.0,
        env: Mapping[str, str] | None = None,
        channel_creds: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        cluster = ""
        metadata: dict[str, Any] = {}
        locality = workload.locality
        # The bootstrap's certificate_providers (gRFC A29), for the mesh's own workload certificate.
        self.certificate_providers: dict[str, Any] = {}
        # An explicit address: the given channel_creds (plaintext when none); otherwise the bootstrap's.
        credentials = (
            XdsChannelCredentials.from_bootstrap(list(channel_creds), "channel_creds")
            if channel_creds is not None
            else XdsChannelCredentials()
        )
        if address is None:
            if channel_creds is not None:
                raise ValueError("channel_creds go with an explicit address (the bootstrap names its own)")
            bootstrap = load_bootstrap(env)
            address = str(bootstrap["xds_servers"][0]["server_uri"])
            credentials = XdsChannelCredentials.from_bootstrap(bootstrap["xds_servers"][0].get("channel_creds"))
            boot_node = bootstrap.get("node", {})
            self.certificate_providers = dict(bootstrap.get("certificate_providers", {}))
            node_id = node_id or boot_node.get("id")
            cluster = str(boot_node.get("cluster", ""))
            metadata = dict(boot_node.get("metadata", {}))
            where = boot_node.get("locality")
            if where and not str(locality):
                locality = Locality(where.get("region", ""), where.get("zone", ""), where.get("sub_zone", ""))
        if not node_id:
            raise ValueError("node_id is required (or a bootstrap whose node has an id)")
        if locality != workload.locality:
            workload = WorkloadIdentity(workload.namespace, workload.labels, locality, workload.name)
        self.address = address
        self.workload = workload
        node = build_node(
            node_id,
            cluster=cluster,
            namespace=workload.namespace,
            labels=dict(workload.labels),
            locality=locality,
            metadata=metadata,
        )
        self.client = XdsClient(
            address,
            node,
            workload,
            publish,
            protocol=protocol,
            initial_fetch_timeout_s=initial_fetch_timeout_s,
            channel_credentials=credentials,
        )

    async def run(self) -> None:
        """The client's stream loop (until cancelled)."""
        await self.client.run()

    async def wait_first(self) -> None:
        """Wait for the first snapshot, at most the initial fetch timeout (plus a margin for the build)."""
        try:
            await self.client.wait_for_version(1, self.client.initial_fetch_timeout_s + 1.0)
        except TimeoutError:
            log.warning(
                "no xDS configuration from %s within %.1fs; starting without it, still trying",
                self.address,
                self.client.initial_fetch_timeout_s,
            )

    async def wait_for_version(self, condition: int | Callable[[XdsClient], bool] = 1, timeout_s: float = 10.0) -> None:
        """See :meth:`XdsClient.wait_for_version`."""
        await self.client.wait_for_version(condition, timeout_s)

    def status(self) -> dict[str, Any]:
        status = self.client.status()
        status["source"] = "xds"
        errors = [t["last_nack"] for t in status["types"].values() if t["last_nack"]]
        status["last_error"] = errors
        return status


def xds_source_of(mesh: Mesh) -> XdsConfigSource:
    """The xDS source of a mesh built with ``Mesh.from_xds`` (for waiting on versions and status)."""
    source = getattr(mesh, "_xds_source", None)
    if source is None:
        raise RuntimeError("this mesh has no xDS source (build it with Mesh.from_xds)")
    assert isinstance(source, XdsConfigSource)
    return source
