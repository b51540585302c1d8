"""A real Envoy as an ADS client of the secure control plane: mTLS to xDS, node id bound to its SVID."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from meshlib.controlplane import CLUSTER, LISTENER, ControlPlane, FileSnapshotSource, StatusBoard
from meshlib.security import MeshCA, SpiffeId
from meshlib.security.plane_security import CONTROL_PLANE_IDENTITY, ControlPlaneSecurity
from tests.integration.security.mtls_setup import write_svid
from tests.interop.envoy_process import EnvoyProcess, envoy_bootstrap
from tests.interop.mesh_yaml import service_yaml, write_config
from tests.ports import free_port

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]
GATEWAY = SpiffeId.for_workload("default", "gateway")


def secure_envoy_bootstrap(node_id: str, xds_port: int, cert_dir: Path) -> dict[str, Any]:
    """``envoy_bootstrap`` with the xDS cluster over mTLS, the plane's SPIFFE ID checked."""
    bootstrap = envoy_bootstrap(node_id, xds_port)
    plane_id = f"spiffe://cluster.local/ns/{CONTROL_PLANE_IDENTITY[0]}/sa/{CONTROL_PLANE_IDENTITY[1]}"
    bootstrap["static_resources"]["clusters"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(cert_dir / "cert-chain.pem")},
                        "private_key": {"filename": str(cert_dir / "key.pem")},
                    }
                ],
                "validation_context": {
                    "trusted_ca": {"filename": str(cert_dir / "root-cert.pem")},
                    "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": plane_id}}],
                },
            },
        },
    }
    return bootstrap


async def test_envoy_over_mtls_and_a_mismatched_node_id(tmp_path: Path) -> None:
    ca = MeshCA.create_root()
    config = tmp_path / "mesh.yaml"
    write_config(config, service_yaml(free_port(), "HTTP", 18001, 18002))
    source = FileSnapshotSource([config], bind_address="127.0.0.1")
    source.load()
    security = ControlPlaneSecurity.from_ca(ca)
    certs = write_svid(ca, tmp_path / "gateway", GATEWAY)
    async with ControlPlane(source, port=0, security=security) as plane:
        source.attach(plane)

        def synced(board: StatusBoard) -> bool:
            streams = [s for s in board.streams.values() if s.node_id == "gateway.default~envoy"]
            return any(all(t in s.types and s.types[t].state == "SYNCED" for t in (LISTENER, CLUSTER)) for s in streams)

        good = tmp_path / "good"
        good.mkdir()
        async with EnvoyProcess(good, secure_envoy_bootstrap("gateway.default~envoy", plane.port, certs)) as envoy:
            try:
                async with asyncio.timeout(20):
                    await plane.wait_until(synced)
            except TimeoutError:
                pytest.fail(f"Envoy never synced over mTLS:\n{envoy.log()}")
        assert plane.status()["security"]["denied_total"] == 0

        bad = tmp_path / "bad"
        bad.mkdir()
        async with EnvoyProcess(bad, secure_envoy_bootstrap("payments.default~envoy", plane.port, certs)) as envoy:
            try:
                async with asyncio.timeout(20):
                    await plane.wait_until(lambda _: plane.status()["security"]["denied_total"] >= 1)
            except TimeoutError:
                pytest.fail(f"the mismatched node id was never refused:\n{envoy.log()}")
            refused = [s for s in plane.status()["streams"] if s["node_id"] == "payments.default~envoy"]
            assert all(t["version_sent"] == "" for s in refused for t in s["types"].values())  # nothing ever sent
    denial = plane.status()["security"]["denied"][0]
    assert denial["identity"] == str(GATEWAY) and denial["node_id"] == "payments.default~envoy"
