"""Secure xDS: mTLS to the control plane, node ids bound to SPIFFE identities, channel_creds honoured.

meshlib's own xDS client (``Mesh.from_xds`` from a bootstrap) over real gRPC TLS on loopback.
Refused clients get no configuration at all; refusals are visible in the plane's status.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from meshlib.config import load_snapshot
from meshlib.controlplane import ControlPlane
from meshlib.discovery.xds import xds_source_of
from meshlib.mesh import Mesh
from meshlib.security import MeshCA, SpiffeId
from meshlib.security.bootstrap_tls import secure_bootstrap
from meshlib.security.node_identity import NodeIdRule
from meshlib.security.plane_security import ControlPlaneSecurity
from meshlib.xds import ClientKind, encode_resources, grpc_bootstrap
from meshlib.xds.channel_creds import ChannelCredentialsError
from tests.conftest import BackendFactory
from tests.integration.security.mtls_setup import write_svid

pytestmark = pytest.mark.asyncio
WAIT = 15.0

YAML = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
"""


@pytest.fixture(scope="module")
def mesh_ca() -> MeshCA:
    return MeshCA.create_root()


@pytest_asyncio.fixture
async def secure_plane(mesh_ca: MeshCA, backend: BackendFactory, tmp_path: Path) -> AsyncIterator[ControlPlane]:
    web = await backend("web")
    path = tmp_path / "web.yaml"
    path.write_text(YAML.format(port=web.port))
    security = ControlPlaneSecurity.from_ca(mesh_ca, ca_port=0)
    async with ControlPlane(port=0, debounce_after=0.0, security=security) as plane:
        plane.set_resources(ClientKind.MESHLIB, encode_resources(load_snapshot([path]), ClientKind.MESHLIB))
        yield plane


def use_bootstrap(monkeypatch: pytest.MonkeyPatch, bootstrap: dict[str, Any]) -> None:
    monkeypatch.delenv("GRPC_XDS_BOOTSTRAP", raising=False)
    monkeypatch.setenv("GRPC_XDS_BOOTSTRAP_CONFIG", json.dumps(bootstrap))


def security_status(plane: ControlPlane) -> dict[str, Any]:
    status: dict[str, Any] = plane.status()["security"]
    return status


async def test_meshlib_client_over_mtls_gets_config(
    secure_plane: ControlPlane, mesh_ca: MeshCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = write_svid(mesh_ca, tmp_path / "reviews", SpiffeId.for_workload("default", "reviews"))
    use_bootstrap(monkeypatch, secure_bootstrap(f"127.0.0.1:{secure_plane.port}", "reviews.default~pod-1", certs))
    mesh = Mesh.from_xds(namespace="default", initial_fetch_timeout_s=WAIT)
    async with mesh:
        status = xds_source_of(mesh).status()
        assert status["connected"] is True and status["channel_credentials"] == "mtls"
        async with mesh.session() as http, http.get("http://web.default.svc.cluster.local:9080/x") as resp:
            assert resp.status == 200
            assert resp.headers["x-backend"] == "web"
    assert security_status(secure_plane)["denied_total"] == 0


async def test_wrong_node_id_for_identity_gets_nothing(
    secure_plane: ControlPlane, mesh_ca: MeshCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = write_svid(mesh_ca, tmp_path / "reviews", SpiffeId.for_workload("default", "reviews"))
    use_bootstrap(monkeypatch, secure_bootstrap(f"127.0.0.1:{secure_plane.port}", "ratings.default~pod-1", certs))
    mesh = Mesh.from_xds(namespace="default", initial_fetch_timeout_s=0.5)
    async with mesh:
        async with asyncio.timeout(WAIT):
            await secure_plane.wait_until(lambda _: security_status(secure_plane)["denied_total"] >= 1)
        client = xds_source_of(mesh).client
        assert client.connects == 0 and not client.connected  # no response ever delivered
    denial = security_status(secure_plane)["denied"][0]
    assert denial["identity"] == "spiffe://cluster.local/ns/default/sa/reviews"
    assert denial["node_id"] == "ratings.default~pod-1"
    assert "may not claim node id 'ratings.default~pod-1'" in denial["reason"]
    assert "PERMISSION_DENIED" in (client.last_stream_error or "") or "may not claim" in (
        client.last_stream_error or ""
    )


async def test_client_without_certificate_gets_nothing(
    secure_plane: ControlPlane, mesh_ca: MeshCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS without a client certificate: the mTLS port drops the handshake; the TLS-only CA port
    accepts the connection but ADS there has no identity → PERMISSION_DENIED, recorded."""
    root = tmp_path / "root-cert.pem"
    root.write_bytes(mesh_ca.trust_bundle_pem)
    tls_only = {"ca_certificate_file": str(root)}
    ca_port = security_status(secure_plane)["ca_port"]
    for port in (secure_plane.port, ca_port):
        use_bootstrap(
            monkeypatch,
            grpc_bootstrap(f"127.0.0.1:{port}", "reviews.default", channel_creds="tls", channel_creds_config=tls_only),
        )
        mesh = Mesh.from_xds(namespace="default", initial_fetch_timeout_s=0.5)
        async with mesh:
            if port == ca_port:
                async with asyncio.timeout(WAIT):
                    await secure_plane.wait_until(lambda _: security_status(secure_plane)["denied_total"] >= 1)
            assert xds_source_of(mesh).client.connects == 0
    denial = security_status(secure_plane)["denied"][0]
    assert denial["identity"] is None
    assert "presented no SPIFFE certificate" in denial["reason"]


async def test_plaintext_client_is_not_served_and_never_downgrades(
    secure_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_bootstrap(monkeypatch, grpc_bootstrap(f"127.0.0.1:{secure_plane.port}", "reviews.default"))
    mesh = Mesh.from_xds(namespace="default", initial_fetch_timeout_s=0.5)
    async with mesh:
        assert xds_source_of(mesh).client.connects == 0
        assert xds_source_of(mesh).status()["channel_credentials"] == "insecure"


async def test_google_default_is_rejected_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    boot = grpc_bootstrap("127.0.0.1:1", "n", channel_creds="google_default")
    boot["xds_servers"][0]["channel_creds"].append({"type": "insecure"})  # must not fall back to this
    use_bootstrap(monkeypatch, boot)
    with pytest.raises(ChannelCredentialsError, match=r"channel_creds\[0\]: type google_default .* not supported"):
        Mesh.from_xds(namespace="default")


async def test_missing_certificate_file_fails_the_stream_not_plaintext(
    secure_plane: ControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = {"ca_certificate_file": str(tmp_path / "nope.pem")}
    use_bootstrap(
        monkeypatch,
        grpc_bootstrap(f"127.0.0.1:{secure_plane.port}", "x", channel_creds="tls", channel_creds_config=missing),
    )
    mesh = Mesh.from_xds(namespace="default", initial_fetch_timeout_s=0.3)
    async with mesh:
        client = xds_source_of(mesh).client
        assert client.connects == 0
        assert "cannot read" in (client.last_stream_error or "")


async def test_plane_with_certificate_files_and_a_node_id_map(
    mesh_ca: MeshCA, backend: BackendFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--tls-cert/--tls-key/--client-ca`` and ``--node-id-map``: a listed identity gets only its patterns."""
    web = await backend("web")
    path = tmp_path / "web.yaml"
    path.write_text(YAML.format(port=web.port))
    plane_certs = tmp_path / "plane"
    plane_certs.mkdir()
    own = mesh_ca.issue_bundle(SpiffeId.for_workload("istio-system", "cp"), ip_addresses=["127.0.0.1"])
    (plane_certs / "cert.pem").write_bytes(own.cert_chain_pem)
    (plane_certs / "key.pem").write_bytes(own.private_key_pem)
    (plane_certs / "ca.pem").write_bytes(mesh_ca.trust_bundle_pem)
    node_map = tmp_path / "nodes"
    node_map.write_text("spiffe://cluster.local/ns/default/sa/reviews  frontend-*\n")
    security = ControlPlaneSecurity.from_files(
        plane_certs / "cert.pem", plane_certs / "key.pem", client_ca=plane_certs / "ca.pem"
    )
    security.node_rule = NodeIdRule.from_file("cluster.local", node_map)
    certs = write_svid(mesh_ca, tmp_path / "reviews", SpiffeId.for_workload("default", "reviews"))
    async with ControlPlane(port=0, debounce_after=0.0, security=security) as plane:
        plane.set_resources(ClientKind.MESHLIB, encode_resources(load_snapshot([path]), ClientKind.MESHLIB))
        use_bootstrap(monkeypatch, secure_bootstrap(f"127.0.0.1:{plane.port}", "frontend-7", certs))
        async with Mesh.from_xds(namespace="default", initial_fetch_timeout_s=WAIT) as mesh:
            assert xds_source_of(mesh).client.connects == 1
        # the default rule would allow reviews.default, but the map lists this identity
        use_bootstrap(monkeypatch, secure_bootstrap(f"127.0.0.1:{plane.port}", "reviews.default", certs))
        async with Mesh.from_xds(namespace="default", initial_fetch_timeout_s=0.5) as mesh:
            async with asyncio.timeout(WAIT):
                await plane.wait_until(lambda _: security_status(plane)["denied_total"] >= 1)
            assert xds_source_of(mesh).client.connects == 0
    assert "allowed: frontend-*" in security_status(plane)["denied"][0]["reason"]
