"""The SPIFFE Workload API over a real Unix-socket gRPC server: meshlib's client and py-spiffe's X509Source."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import grpc
import pytest

from meshlib.security import (
    CertBundle,
    CertificateInvalid,
    MeshCA,
    NoCertificateYet,
    SpiffeId,
    StaticCertificateSource,
)
from meshlib.security.workload_api import (
    FETCH_X509_SVID,
    WorkloadApiCertificateSource,
    WorkloadApiNotSupported,
    WorkloadApiServer,
    X509SVIDRequest,
    X509SVIDResponse,
    bundle_from_svid,
    endpoint_target,
    split_der_certificates,
    svid_message,
)

REVIEWS = SpiffeId.for_workload("default", "reviews")


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA.create_root().create_intermediate()


@pytest.mark.asyncio
async def test_meshlib_client_follows_rotations(ca: MeshCA, tmp_path: Path) -> None:
    static = StaticCertificateSource(ca.issue_bundle(REVIEWS))
    async with WorkloadApiServer(static, tmp_path / "agent.sock") as server:
        assert (tmp_path / "agent.sock").stat().st_mode & 0o777 == 0o600
        async with WorkloadApiCertificateSource(server.endpoint) as source:
            assert source.current().spiffe_id == REVIEWS
            assert source.current().cert_chain_pem == static.current().cert_chain_pem
            rotated = asyncio.Event()
            seen: list[CertBundle] = []
            source.subscribe(lambda b: (seen.append(b), rotated.set()))
            static.replace(ca.issue_bundle(REVIEWS))
            async with asyncio.timeout(10):
                await rotated.wait()
            assert seen[0].cert_chain_pem == static.current().cert_chain_pem
            assert source.current().private_key_pem == static.current().private_key_pem
            assert source.updates == 2


@pytest.mark.asyncio
async def test_py_spiffe_x509_source_reads_our_server(ca: MeshCA, tmp_path: Path) -> None:
    from spiffe import X509Source  # py-spiffe, a third-party Workload API client

    static = StaticCertificateSource(ca.issue_bundle(REVIEWS))
    async with WorkloadApiServer(static, tmp_path / "agent.sock") as server:

        def read_then_rotate() -> tuple[str, int, int]:
            updated = threading.Event()
            with X509Source(socket_path=server.endpoint, timeout_in_seconds=10) as x509_source:
                first = x509_source.get_x509_context().default_svid
                x509_source.subscribe_for_updates(updated.set)
                loop.call_soon_threadsafe(static.replace, ca.issue_bundle(REVIEWS))
                assert updated.wait(10), "py-spiffe saw no rotation"
                return (
                    str(first.spiffe_id),
                    first.leaf.serial_number,
                    x509_source.get_x509_context().default_svid.leaf.serial_number,
                )

        loop = asyncio.get_running_loop()
        spiffe_id, first_serial, second_serial = await asyncio.to_thread(read_then_rotate)
    assert spiffe_id == str(REVIEWS)
    assert first_serial != second_serial == static.current().leaf.serial_number


@pytest.mark.asyncio
async def test_calls_without_the_security_header_are_refused(ca: MeshCA, tmp_path: Path) -> None:
    source = StaticCertificateSource(ca.issue_bundle(REVIEWS))
    async with (
        WorkloadApiServer(source, tmp_path / "a.sock") as server,
        grpc.aio.insecure_channel(f"unix:{server.path}") as channel,
    ):
        call = channel.unary_stream(FETCH_X509_SVID, X509SVIDRequest.SerializeToString, X509SVIDResponse.FromString)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in call(X509SVIDRequest(), timeout=10):
                pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.asyncio
async def test_no_server_is_a_clear_timeout(tmp_path: Path) -> None:
    source = WorkloadApiCertificateSource(f"unix://{tmp_path}/none.sock", first_update_timeout_s=0.5)
    with pytest.raises(NoCertificateYet, match=r"no SVID from the Workload API at unix:.*none\.sock within 0\.5s"):
        await source.start()


def test_invalid_svids_are_refused(ca: MeshCA) -> None:
    good, other = ca.issue_bundle(REVIEWS), ca.issue_bundle(REVIEWS)
    message = svid_message(good)
    assert bundle_from_svid(message).cert_chain_pem == good.cert_chain_pem
    mixed = svid_message(good)
    mixed.x509_svid_key = svid_message(other).x509_svid_key
    with pytest.raises(CertificateInvalid, match="does not match"):
        bundle_from_svid(mixed)
    lying = svid_message(good)
    lying.spiffe_id = "spiffe://cluster.local/ns/default/sa/admin"
    with pytest.raises(CertificateInvalid, match="but the certificate is"):
        bundle_from_svid(lying)
    stranger = svid_message(good)
    stranger.bundle = svid_message(MeshCA.create_root().issue_bundle(REVIEWS)).bundle
    with pytest.raises(CertificateInvalid, match="not signed by the trust bundle"):
        bundle_from_svid(stranger)


def test_der_splitting_and_endpoints(ca: MeshCA) -> None:
    message = svid_message(ca.issue_bundle(REVIEWS))
    assert len(split_der_certificates(message.x509_svid)) == 2  # leaf + intermediate
    for bad in (b"\x31\x00", b"\x30\x85\x00\x00\x00\x00\x01", b"\x30\x05ab"):
        with pytest.raises(CertificateInvalid):
            split_der_certificates(bad)
    assert endpoint_target("unix:///run/agent.sock") == "unix:/run/agent.sock"
    assert endpoint_target("/run/agent.sock") == "unix:/run/agent.sock"
    with pytest.raises(WorkloadApiNotSupported, match="only unix://"):
        endpoint_target("tcp://127.0.0.1:8081")
