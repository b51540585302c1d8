"""The client against resources shaped the way istiod sends them (hand-built, not our encoder).

The plane serves the istiod-shaped fixtures of the decoder tests; only one of
the four EDS clusters has a ClusterLoadAssignment, so the client must resolve
the others as absent: delta by ``removed_resources`` at once, SotW by the
initial fetch timeout (a SotW response without a name does not say it is gone).
"""

from __future__ import annotations

import pytest

from meshlib.controlplane import ControlPlane
from meshlib.discovery.xds import xds_source_of
from meshlib.mesh import Mesh
from meshlib.xds import ClientKind
from meshlib.xds import type_urls as urls
from tests.integration.xds_client.conftest import WAIT
from tests.unit.xds.istiod_shapes import (
    REVIEWS,
    istio_cluster,
    istio_listener,
    istio_load_assignment,
    istio_route_configuration,
    istio_tcp_listener,
)
from tests.unit.xds.test_istiod_shapes import istiod_snapshot

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
async def test_istiod_shaped_resources_decode_like_the_decoder(protocol: str) -> None:
    clusters = {c.name: c for c in (istio_cluster("v1"), istio_cluster("v2"), istio_cluster("v3"), istio_cluster(""))}
    resources = {
        urls.CLUSTER: clusters,
        urls.CLUSTER_LOAD_ASSIGNMENT: {a.cluster_name: a for a in (istio_load_assignment("v1"),)},
        urls.ROUTE_CONFIGURATION: {"9080": istio_route_configuration()},
        urls.LISTENER: {"0.0.0.0_9080": istio_listener(), "0.0.0.0_3306": istio_tcp_listener()},
    }
    async with ControlPlane(port=0, debounce_after=0.0, require_consistent=False) as cp:
        cp.set_resources(ClientKind.MESHLIB, resources)
        mesh = Mesh.from_xds(
            f"127.0.0.1:{cp.port}",
            node_id="istiod-shapes",
            protocol=protocol,  # type: ignore[arg-type]
            initial_fetch_timeout_s=0.5,
        )
        async with mesh:
            await xds_source_of(mesh).wait_for_version(1, WAIT)
            expected = istiod_snapshot()
            assert mesh.snapshot.clusters == expected.clusters
            assert mesh.snapshot.route_configs == expected.route_configs
            assert mesh.snapshot.listeners == expected.listeners
            assert mesh.snapshot.services == expected.services
            status = mesh.status()
            missing = {f"ClusterLoadAssignment outbound|9080|{s}|{REVIEWS}" for s in ("v2", "v3", "")}
            if protocol == "sotw":
                assert missing <= set(status["timed_out"])
            else:
                assert not missing & set(status["timed_out"])  # the server said they do not exist
            assert status["types"]["Listener"]["resources"] == 2
