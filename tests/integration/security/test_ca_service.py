"""The control plane's CA over real gRPC: token, pre-issued certificate, refusals, rotation."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from meshlib.security import CertBundle, IssuanceRefused, MeshCA, SpiffeId, StaticCertificateSource, verify_svid
from meshlib.security.ca_client import CaClientCertificateSource, refresh_time
from meshlib.security.ca_proto import METHOD_PATH, IstioCertificateRequest, IstioCertificateResponse
from meshlib.security.ca_service import BootstrapTokens, CertificateAuthorityService
from meshlib.security.grpc_credentials import rotating_server_credentials

REVIEWS = SpiffeId.for_workload("default", "reviews")
RATINGS = SpiffeId.for_workload("default", "ratings")
TOKEN = "reviews-token-0123456789abcdef"


@dataclass
class CaServer:
    ca: MeshCA
    service: CertificateAuthorityService
    mtls_port: int
    tls_port: int
    token_file: Path

    @property
    def trust(self) -> bytes:
        return self.ca.trust_bundle_pem


@pytest.fixture(scope="module")
def mesh_ca() -> MeshCA:
    return MeshCA.create_root().create_intermediate()


@pytest_asyncio.fixture
async def ca_server(mesh_ca: MeshCA, tmp_path: Path) -> AsyncIterator[CaServer]:
    tokens = BootstrapTokens({TOKEN: (REVIEWS, ["reviews.default.svc"])})
    service = CertificateAuthorityService(mesh_ca, tokens=tokens)
    own = StaticCertificateSource(
        mesh_ca.issue_bundle(SpiffeId.for_workload("istio-system", "meshlib"), ip_addresses=["127.0.0.1"])
    )
    server = grpc.aio.server()
    service.add_to_server(server)
    mtls = server.add_secure_port("127.0.0.1:0", rotating_server_credentials(own, require_client_auth=True))
    tls = server.add_secure_port("127.0.0.1:0", rotating_server_credentials(own, require_client_auth=False))
    await server.start()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    try:
        yield CaServer(mesh_ca, service, mtls, tls, token_file)
    finally:
        await server.stop(None)


@pytest.mark.asyncio
async def test_token_bootstrap_issues_the_tokens_identity(ca_server: CaServer) -> None:
    source = CaClientCertificateSource(
        f"127.0.0.1:{ca_server.tls_port}",
        ca_trust_pem=ca_server.trust,
        token_file=ca_server.token_file,
        dns_names=["reviews.default.svc"],
    )
    async with source:
        bundle = source.current()
    assert bundle.spiffe_id == REVIEWS  # the client did not even say who it is: the token decides
    assert verify_svid(bundle.cert_chain_pem, ca_server.trust, expected=REVIEWS) == REVIEWS
    lifetime = bundle.not_after - datetime.now(UTC)
    assert timedelta(hours=23) < lifetime <= timedelta(hours=24)
    assert ca_server.service.stats.issued == 1


@pytest.mark.asyncio
async def test_unknown_token_and_no_credentials_are_refused(ca_server: CaServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad-token"
    bad.write_text("not-a-known-token-at-all")
    source = CaClientCertificateSource(f"127.0.0.1:{ca_server.tls_port}", ca_trust_pem=ca_server.trust, token_file=bad)
    with pytest.raises(IssuanceRefused, match="UNAUTHENTICATED: unknown bootstrap token"):
        await source.start()
    # a raw call without any credential over TLS
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{ca_server.tls_port}", grpc.ssl_channel_credentials(ca_server.trust)
    ) as channel:
        call = channel.unary_unary(
            METHOD_PATH, IstioCertificateRequest.SerializeToString, IstioCertificateResponse.FromString
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(IstioCertificateRequest(csr="x"), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "no credentials" in (info.value.details() or "")
    assert ca_server.service.stats.issued == 0
    assert ca_server.service.stats.refused == 2
    assert ca_server.service.status()["ca"]["recent_refusals"][0]["reason"] == "unknown bootstrap token"


@pytest.mark.asyncio
async def test_token_cannot_ask_for_another_identity_or_dns_name(ca_server: CaServer) -> None:
    target = f"127.0.0.1:{ca_server.tls_port}"
    other = CaClientCertificateSource(
        target, ca_trust_pem=ca_server.trust, token_file=ca_server.token_file, spiffe_id=RATINGS
    )
    with pytest.raises(
        IssuanceRefused, match=r"PERMISSION_DENIED: CSR asks for 'spiffe://cluster\.local/ns/default/sa/ratings'"
    ):
        await other.start()
    dns = CaClientCertificateSource(
        target, ca_trust_pem=ca_server.trust, token_file=ca_server.token_file, dns_names=["admin.example.com"]
    )
    with pytest.raises(IssuanceRefused, match=r"PERMISSION_DENIED: CSR asks for DNS name 'admin\.example\.com'"):
        await dns.start()


@pytest.mark.asyncio
async def test_lifetime_above_maximum_is_refused(ca_server: CaServer) -> None:
    source = CaClientCertificateSource(
        f"127.0.0.1:{ca_server.tls_port}",
        ca_trust_pem=ca_server.trust,
        token_file=ca_server.token_file,
        ttl=timedelta(days=30),
    )
    with pytest.raises(IssuanceRefused, match="INVALID_ARGUMENT: requested lifetime 2592000s exceeds the maximum"):
        await source.start()


@pytest.mark.asyncio
async def test_pre_issued_certificate_renews_only_its_own_identity(ca_server: CaServer) -> None:
    pre_issued = StaticCertificateSource(ca_server.ca.issue_bundle(RATINGS, ttl=timedelta(hours=1)))
    target = f"127.0.0.1:{ca_server.mtls_port}"
    source = CaClientCertificateSource(target, ca_trust_pem=ca_server.trust, bootstrap=pre_issued)
    async with source:
        assert source.current().spiffe_id == RATINGS
        assert source.current().cert_chain_pem != pre_issued.current().cert_chain_pem
        renewed = await source.rotate_now()  # now authenticated by its own new certificate
        assert renewed.spiffe_id == RATINGS
    impostor = CaClientCertificateSource(target, ca_trust_pem=ca_server.trust, bootstrap=pre_issued, spiffe_id=REVIEWS)
    with pytest.raises(
        IssuanceRefused, match=r"PERMISSION_DENIED: CSR asks for .*reviews' but the caller is .*ratings"
    ):
        await impostor.start()


@pytest.mark.asyncio
async def test_certificate_from_another_ca_cannot_even_connect(ca_server: CaServer) -> None:
    stranger = StaticCertificateSource(MeshCA.create_root().issue_bundle(REVIEWS))
    source = CaClientCertificateSource(
        f"127.0.0.1:{ca_server.mtls_port}", ca_trust_pem=ca_server.trust, bootstrap=stranger, request_timeout_s=5
    )
    with pytest.raises(IssuanceRefused, match="UNAVAILABLE"):
        await source.start()
    assert ca_server.service.stats.issued == 0


@pytest.mark.asyncio
async def test_rotation_before_expiry_with_injected_clock(ca_server: CaServer) -> None:
    now = [datetime.now(UTC)]
    delays: list[float] = []
    parked = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) > 1:  # after one rotation: stay parked until the test stops the source
            parked.set()
            await asyncio.Event().wait()
        now[0] += timedelta(seconds=seconds)

    rotated: list[CertBundle] = []
    source = CaClientCertificateSource(
        f"127.0.0.1:{ca_server.tls_port}",
        ca_trust_pem=ca_server.trust,
        token_file=ca_server.token_file,
        clock=lambda: now[0],
        sleep=fake_sleep,
        rng=random.Random(7),
    )
    source.subscribe(rotated.append)
    async with source:
        async with asyncio.timeout(20):
            await parked.wait()
        first_lifetime = (rotated[0].not_after - rotated[0].not_before).total_seconds()
        assert 0.5 * first_lifetime - 120 <= delays[0] <= 0.8 * first_lifetime
        assert len(rotated) == 2 and source.rotations == 2
        assert rotated[1].cert_chain_pem != rotated[0].cert_chain_pem
        assert source.current() is rotated[1]


def test_refresh_time_is_jittered_within_the_window(mesh_ca: MeshCA) -> None:
    bundle = mesh_ca.issue_bundle(REVIEWS)
    lifetime = bundle.not_after - bundle.not_before
    times = {refresh_time(bundle, random.Random(seed)) for seed in range(20)}
    assert len(times) > 10
    assert all(bundle.not_before + lifetime * 0.5 <= t <= bundle.not_before + lifetime * 0.8 for t in times)


def test_tokens_file_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# comment\nspiffe://cluster.local/ns/a/sa/b  long-enough-token-123 b.a.svc\nspiffe://x/y short\n")
    with pytest.raises(Exception, match=r"tokens:3: bootstrap tokens must be at least 16"):
        BootstrapTokens.from_file(path)
    path.write_text("spiffe://cluster.local/ns/a/sa/b  long-enough-token-123 b.a.svc\n")
    tokens = BootstrapTokens.from_file(path)
    entry = tokens.lookup("long-enough-token-123")
    assert entry is not None and entry.spiffe_id == SpiffeId.for_workload("a", "b")
    assert tokens.lookup("long-enough-token-124") is None
