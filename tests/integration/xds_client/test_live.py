"""The meshlib xDS client against a real loopback ControlPlane with real aiohttp backends.

Route changes, the NACK path, a control-plane outage and the bootstrap path.
Every wait is on an event (the client's ``wait_for_version``, the plane's
``wait_until``) bounded by ``asyncio.timeout`` — no sleeps.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from meshlib.config import load_snapshot
from meshlib.controlplane import CLUSTER, ControlPlane, StatusBoard
from meshlib.discovery.xds import xds_source_of
from meshlib.mesh import Mesh
from meshlib.xds import ClientKind, encode_resources, grpc_bootstrap
from meshlib.xds.client import XdsClient
from tests.conftest import Backend, BackendFactory
from tests.integration.xds_client.conftest import WAIT, plane

pytestmark = pytest.mark.asyncio

URL = "http://web:9080/hello"
V1_CLUSTER = "outbound|9080|v1|web.default.svc.cluster.local"


def config(tmp_path: Path, v1: Backend, v2: Backend, subset: str) -> Path:
    """Service ``web`` with subsets v1/v2 on two real backends; every request goes to ``subset``."""
    text = f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 9080, name: http, protocol: HTTP}}
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {v1.port}}}, labels: {{app: web, version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {v2.port}}}, labels: {{app: web, version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web, namespace: default}}
spec:
  host: web
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web]
  http:
  - route:
    - destination: {{host: web, subset: {subset}}}
    timeout: 2s
"""
    path = tmp_path / f"web-{subset}.yaml"
    path.write_text(text)
    return path


def resources(path: Path) -> dict[str, Any]:
    return encode_resources(load_snapshot([path]), ClientKind.MESHLIB)


async def backend_of(mesh: Mesh) -> str:
    async with mesh.session() as http, http.get(URL) as resp:
        assert resp.status == 200
        return str(resp.headers["x-backend"])


def client(mesh: Mesh) -> XdsClient:
    return xds_source_of(mesh).client


async def test_traffic_follows_route_changes(backend: BackendFactory, tmp_path: Path) -> None:
    v1, v2 = await backend("v1"), await backend("v2")
    async with plane() as cp:
        cp.set_resources(ClientKind.MESHLIB, resources(config(tmp_path, v1, v2, "v1")))
        mesh = Mesh.from_xds(f"127.0.0.1:{cp.port}", node_id="web-client")
        async with mesh:
            assert [await backend_of(mesh) for _ in range(3)] == ["v1"] * 3
            before = client(mesh).publishes
            cp.set_resources(ClientKind.MESHLIB, resources(config(tmp_path, v1, v2, "v2")))
            await xds_source_of(mesh).wait_for_version(before + 1, WAIT)
            assert [await backend_of(mesh) for _ in range(3)] == ["v2"] * 3
            assert v1.hits == 3 and v2.hits == 3
            status = mesh.status()
            assert status["source"] == "xds" and status["connected"] is True
            assert status["server"] == f"127.0.0.1:{cp.port}"
            assert status["types"]["RouteConfiguration"]["version_acked"]
            # and the plane sees every type ACKed by this node
            assert all(t["state"] == "SYNCED" for t in cp.status()["streams"][0]["types"].values())


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
async def test_invalid_cluster_is_nacked_and_old_config_keeps_serving(
    backend: BackendFactory, tmp_path: Path, protocol: str
) -> None:
    v1, v2 = await backend("v1"), await backend("v2")
    good = resources(config(tmp_path, v1, v2, "v1"))
    async with plane() as cp:
        cp.set_resources(ClientKind.MESHLIB, good)
        mesh = Mesh.from_xds(f"127.0.0.1:{cp.port}", node_id="nack-client", protocol=protocol)  # type: ignore[arg-type]
        async with mesh:
            assert await backend_of(mesh) == "v1"
            version = mesh.snapshot.version
            bad_cluster = cluster_pb2.Cluster()
            bad_cluster.CopyFrom(good[CLUSTER][V1_CLUSTER])
            bad_cluster.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
            bad = {type_url: dict(items) for type_url, items in good.items()}
            bad[CLUSTER][V1_CLUSTER] = bad_cluster
            cp.set_resources(ClientKind.MESHLIB, bad)

            def nacked(board: StatusBoard) -> bool:
                return board.count(CLUSTER, state="NACKED") == 1

            async with asyncio.timeout(WAIT):
                await cp.wait_until(nacked)
            (stream,) = cp.status()["streams"]
            error = stream["types"][CLUSTER]["last_nack"]["error"]
            assert error.startswith(f"Cluster {V1_CLUSTER}: lb_policy: "), error
            assert "CLUSTER_PROVIDED" in error
            # the client kept the last good snapshot and still routes with it, to a real backend
            assert mesh.snapshot.version == version
            assert await backend_of(mesh) == "v1"
            status = mesh.status()
            assert status["types"]["Cluster"]["last_nack"] == error
            assert status["last_error"] == [error]
            assert status["types"]["Cluster"]["version_acked"] != stream["types"][CLUSTER]["version_sent"]

            # a valid push afterwards is accepted again
            before = client(mesh).publishes
            cp.set_resources(ClientKind.MESHLIB, resources(config(tmp_path, v1, v2, "v2")))
            await xds_source_of(mesh).wait_for_version(before + 1, WAIT)
            assert await backend_of(mesh) == "v2"


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
async def test_outage_keeps_serving_and_reconnects(backend: BackendFactory, tmp_path: Path, protocol: str) -> None:
    v1, v2 = await backend("v1"), await backend("v2")
    first = plane()
    await first.start()
    port = first.port
    first.set_resources(ClientKind.MESHLIB, resources(config(tmp_path, v1, v2, "v1")))
    mesh = Mesh.from_xds(f"127.0.0.1:{port}", node_id="outage-client", protocol=protocol)  # type: ignore[arg-type]
    async with mesh:
        assert await backend_of(mesh) == "v1"
        source = xds_source_of(mesh)
        await first.stop(grace=0)
        await source.wait_for_version(lambda c: not c.connected, WAIT)
        assert mesh.status()["connected"] is False
        # the control plane is gone: requests keep flowing on the last good snapshot
        assert [await backend_of(mesh) for _ in range(3)] == ["v1"] * 3

        published = source.client.publishes
        async with ControlPlane(port=port, debounce_after=0.0) as second:
            second.set_resources(ClientKind.MESHLIB, resources(config(tmp_path, v1, v2, "v2")))
            await source.wait_for_version(lambda c: c.connected and c.publishes > published, 3 * WAIT)
            assert mesh.status()["connected"] is True
            assert source.client.connects == 2
            assert await backend_of(mesh) == "v2"


async def test_bootstrap_from_env(backend: BackendFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v1, v2 = await backend("v1"), await backend("v2")
    async with plane() as cp:
        cp.set_resources(ClientKind.MESHLIB, resources(config(tmp_path, v1, v2, "v2")))
        boot = grpc_bootstrap(f"127.0.0.1:{cp.port}", "boot-node", cluster="web-cluster")
        monkeypatch.delenv("GRPC_XDS_BOOTSTRAP", raising=False)
        monkeypatch.setenv("GRPC_XDS_BOOTSTRAP_CONFIG", json.dumps(boot))
        mesh = Mesh.from_xds(namespace="default")
        async with mesh:
            assert mesh.status()["connected"] is True
            assert await backend_of(mesh) == "v2"
            (stream,) = cp.status()["streams"]
            assert stream["node_id"] == "boot-node"
            assert stream["node_cluster"] == "web-cluster"
            assert stream["group"] == ClientKind.MESHLIB
