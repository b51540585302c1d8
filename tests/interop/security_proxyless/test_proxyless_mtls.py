"""Proxyless grpcio client ↔ xDS-enabled grpcio server over mTLS, both configured by meshlib's control plane.

xds_channel_credentials / xds_server_credentials take their certificates from the
``file_watcher`` provider of each side's bootstrap; the control plane decides that
TLS is used (CDS ``UpstreamTlsContext``, LDS ``DownstreamTlsContext``) and which
server identity the client accepts (``match_subject_alt_names``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshlib.security.ca import MeshCA
from tests.integration.security.mtls_setup import svid, write_bundle
from tests.ports import free_port

MAIN = Path(__file__).with_name("proxyless_mtls_main.py")
ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def service(name: str, port: int, identity: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {name}.default.svc.cluster.local
  trafficPolicy:
    tls: {{mode: ISTIO_MUTUAL, subjectAltNames: [{identity}]}}
"""


def test_proxyless_client_and_server_use_mtls_from_the_control_plane(tmp_path: Path) -> None:
    ca = MeshCA.create_root("cluster.local")
    write_bundle(tmp_path / "server", svid(ca, "reviews"))
    write_bundle(tmp_path / "client", svid(ca, "productpage"))
    port = free_port()
    config = tmp_path / "mesh.yaml"
    config.write_text(
        service("reviews", port, "spiffe://cluster.local/ns/default/sa/reviews")
        + "---\n"
        + service("ratings", port, "spiffe://cluster.local/ns/default/sa/ratings")
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRPC_VERBOSITY": "NONE"}
    done = subprocess.run(
        [sys.executable, str(MAIN), str(config), str(port), str(tmp_path / "server"), str(tmp_path / "client")],
        capture_output=True, text=True, timeout=180, env=env, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    # The server saw the client's SVID; the client verified the server's SPIFFE ID (URI SAN).
    assert results["reviews"] == "OK spiffe://cluster.local/ns/default/sa/productpage", results
    # ratings expects another identity from the same server: the client refuses every handshake
    # (a wait_for_ready call keeps retrying them until its deadline).
    assert results["ratings"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED"), results
    # A plaintext client gets nothing from the STRICT server.
    assert results["plaintext"] == "UNAVAILABLE", results
