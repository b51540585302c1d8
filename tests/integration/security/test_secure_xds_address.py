"""``Mesh.from_xds(address, channel_creds=...)``: TLS to an explicit control-plane address, no bootstrap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from meshlib.config import load_snapshot
from meshlib.controlplane import ControlPlane
from meshlib.discovery.xds import xds_source_of
from meshlib.mesh import Mesh
from meshlib.security import MeshCA, SpiffeId
from meshlib.security.ca import WORKLOAD_CHAIN_FILE, WORKLOAD_KEY_FILE, WORKLOAD_ROOT_FILE
from meshlib.security.plane_security import ControlPlaneSecurity
from meshlib.xds import ClientKind, encode_resources
from meshlib.xds.channel_creds import ChannelCredentialsError
from tests.conftest import BackendFactory
from tests.integration.security.mtls_setup import write_svid
from tests.integration.security.test_secure_xds import YAML


@pytest_asyncio.fixture
async def plane(backend: BackendFactory, tmp_path: Path) -> AsyncIterator[tuple[ControlPlane, MeshCA]]:
    ca = MeshCA.create_root()
    web = await backend("web")
    path = tmp_path / "web.yaml"
    path.write_text(YAML.format(port=web.port))
    async with ControlPlane(port=0, debounce_after=0.0, security=ControlPlaneSecurity.from_ca(ca, ca_port=0)) as cp:
        cp.set_resources(ClientKind.MESHLIB, encode_resources(load_snapshot([path]), ClientKind.MESHLIB))
        yield cp, ca


@pytest.mark.asyncio
async def test_explicit_address_with_tls_channel_creds(plane: tuple[ControlPlane, MeshCA], tmp_path: Path) -> None:
    control_plane, ca = plane
    certs = write_svid(ca, tmp_path / "reviews", SpiffeId.for_workload("default", "reviews"))
    files = {
        "ca_certificate_file": str(certs / WORKLOAD_ROOT_FILE),
        "certificate_file": str(certs / WORKLOAD_CHAIN_FILE),
        "private_key_file": str(certs / WORKLOAD_KEY_FILE),
    }
    mesh = Mesh.from_xds(
        f"127.0.0.1:{control_plane.port}",
        node_id="reviews.default~pod-1",
        channel_creds=[{"type": "tls", "config": files}],
        initial_fetch_timeout_s=15.0,
    )
    async with mesh:
        assert xds_source_of(mesh).status()["channel_credentials"] == "mtls"
        async with mesh.session() as http, http.get("http://web.default.svc.cluster.local:9080/x") as resp:
            assert resp.status == 200


def test_google_default_is_refused_for_an_explicit_address_too() -> None:
    with pytest.raises(ChannelCredentialsError, match="google_default"):
        Mesh.from_xds("127.0.0.1:1", node_id="a", channel_creds=[{"type": "google_default"}])
