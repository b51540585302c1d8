"""The whole identity chain under traffic: both workloads get SVIDs from the control plane's CA
(bootstrap tokens), talk ISTIO_MUTUAL, and renew from the CA mid-traffic without a failed request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from cryptography import x509

from meshlib.security import MeshCA, SpiffeId, StaticCertificateSource
from meshlib.security.ca_client import CaClientCertificateSource
from meshlib.security.ca_service import BootstrapTokens, CertificateAuthorityService
from meshlib.security.grpc_credentials import rotating_server_credentials
from tests.integration.security.mtls_setup import start_mutual_pair, traffic_with_rotation

pytestmark = pytest.mark.asyncio
URL = "http://reviews:9080/r"
REVIEWS = SpiffeId.for_workload("default", "reviews")
PRODUCTPAGE = SpiffeId.for_workload("default", "productpage")
TOKENS = {"reviews-token-0123456789": REVIEWS, "productpage-token-0123456789": PRODUCTPAGE}


@pytest_asyncio.fixture
async def ca_port() -> AsyncIterator[tuple[MeshCA, int]]:
    ca = MeshCA.create_root()
    service = CertificateAuthorityService(ca, tokens=BootstrapTokens({t: (i, []) for t, i in TOKENS.items()}))
    own = StaticCertificateSource(
        ca.issue_bundle(SpiffeId.for_workload("istio-system", "ca"), ip_addresses=["127.0.0.1"])
    )
    server = grpc.aio.server()
    service.add_to_server(server)
    port = server.add_secure_port("127.0.0.1:0", rotating_server_credentials(own, require_client_auth=False))
    await server.start()
    try:
        yield ca, port
    finally:
        await server.stop(None)


def source_for(ca: MeshCA, port: int, tmp_path: Path, identity: SpiffeId) -> CaClientCertificateSource:
    token = next(t for t, i in TOKENS.items() if i == identity)
    token_file = tmp_path / f"{identity.service_account}.token"
    token_file.write_text(token)
    return CaClientCertificateSource(
        f"127.0.0.1:{port}", ca_trust_pem=ca.trust_bundle_pem, token_file=token_file, spiffe_id=identity
    )


async def test_ca_issued_svids_rotate_under_traffic(ca_port: tuple[MeshCA, int], tmp_path: Path) -> None:
    ca, port = ca_port
    async with (
        source_for(ca, port, tmp_path, REVIEWS) as server_certs,
        source_for(ca, port, tmp_path, PRODUCTPAGE) as client_certs,
    ):
        pair = await start_mutual_pair(tmp_path, server_certs, client_certs, str(REVIEWS))
        server = pair.server
        first_client = client_certs.current()

        async def renew() -> None:  # both from the CA, mid-traffic (new keys, new certificates)
            await asyncio.gather(client_certs.rotate_now(), server_certs.rotate_now())

        try:
            statuses = await traffic_with_rotation(
                pair.client, URL, renew, workers=3, requests_each=20, rotate_after=30
            )
        finally:
            await server.stop()
    assert statuses == [200] * 60
    assert set(server.seen) == {str(PRODUCTPAGE)}
    old = x509.load_pem_x509_certificates(first_client.cert_chain_pem)[0].serial_number
    new = x509.load_pem_x509_certificates(client_certs.current().cert_chain_pem)[0].serial_number
    assert old != new and server.serials[0] == old and server.serials[-1] == new
    assert client_certs.rotations == 2 and server_certs.rotations == 2
