"""The post-handshake identity check and the per-cluster TLS settings, without sockets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meshlib.config.model import ClientTls, Cluster, Endpoint, TrafficPolicy
from meshlib.security.bundle import StaticCertificateSource
from meshlib.security.ca import MeshCA
from meshlib.security.spiffe import SpiffeId
from meshlib.security.tls_client import TlsUnavailable, UpstreamTlsContexts, grpc_tls, istio_sni
from meshlib.security.tls_contexts import PeerExpectation, peer_spiffe_id

REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"


def cert(*sans: tuple[str, str]) -> dict[str, object]:
    return {"subject": (), "subjectAltName": sans}


def cluster(tls: ClientTls, subset: str = "") -> Cluster:
    fqdn = "reviews.default.svc.cluster.local"
    return Cluster(f"outbound|9080|{subset}|{fqdn}", fqdn, 9080, subset, (Endpoint("10.0.0.1", 9080),),
                   TrafficPolicy(tls=tls))


def test_expected_names_match_uri_or_dns_sans() -> None:
    expectation = PeerExpectation(frozenset({REVIEWS, "reviews.example"}))
    assert expectation.failure(cert(("URI", REVIEWS))) is None
    assert expectation.failure(cert(("DNS", "reviews.example"))) is None
    reason = expectation.failure(cert(("URI", "spiffe://cluster.local/ns/default/sa/ratings")))
    assert reason is not None and "does not match the expected subjectAltNames" in reason
    assert expectation.failure({}) == "peer presented no certificate subjectAltName"


def test_trust_domain_expectation() -> None:
    expectation = PeerExpectation(trust_domain="cluster.local")
    assert expectation.failure(cert(("URI", REVIEWS))) is None
    assert expectation.failure(cert(("URI", "spiffe://example.org/ns/a/sa/b"))) == (
        "peer spiffe://example.org/ns/a/sa/b is not in trust domain 'cluster.local'"
    )
    assert expectation.failure(cert(("DNS", "reviews"))) == "peer certificate carries no SPIFFE ID"
    # Two URI SANs are not an SVID.
    assert peer_spiffe_id(cert(("URI", REVIEWS), ("URI", "spiffe://cluster.local/x"))) is None


def test_istio_sni_and_context_cache_follows_rotation() -> None:
    assert istio_sni(cluster(ClientTls(mode="ISTIO_MUTUAL"), "v1")) == (
        "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
    )
    ca = MeshCA.create_root("cluster.local")
    source = StaticCertificateSource(ca.issue_bundle(SpiffeId.for_workload("default", "productpage")))
    contexts = UpstreamTlsContexts(lambda: source)
    istio = cluster(ClientTls(mode="ISTIO_MUTUAL", subject_alt_names=(REVIEWS,)))
    first = contexts.for_cluster(istio)
    assert contexts.for_cluster(istio) is first  # cached
    assert first.expectation == PeerExpectation(frozenset({REVIEWS}))
    assert first.server_hostname == "outbound_.9080_._.reviews.default.svc.cluster.local"
    source.replace(ca.issue_bundle(SpiffeId.for_workload("default", "productpage")))
    rotated = contexts.for_cluster(istio)
    assert rotated is not first and contexts.generation == 1
    # Without subjectAltNames: any identity of the workload's own trust domain.
    assert contexts.for_cluster(cluster(ClientTls(mode="ISTIO_MUTUAL"))).expectation == PeerExpectation(
        trust_domain="cluster.local"
    )


def test_unavailable_settings_are_errors() -> None:
    with pytest.raises(TlsUnavailable, match="no workload certificate"):
        UpstreamTlsContexts(lambda: None).for_cluster(cluster(ClientTls(mode="ISTIO_MUTUAL")))
    empty = StaticCertificateSource()
    with pytest.raises(TlsUnavailable, match="no certificate has been set"):
        UpstreamTlsContexts(lambda: empty).for_cluster(cluster(ClientTls(mode="ISTIO_MUTUAL")))
    with pytest.raises(TlsUnavailable, match="cannot load TLS files"):
        UpstreamTlsContexts(lambda: None).for_cluster(cluster(ClientTls(mode="SIMPLE", ca_certificates="/nope.pem")))
    simple = cluster(ClientTls(mode="SIMPLE", insecure_skip_verify=True))
    with pytest.raises(TlsUnavailable, match="insecureSkipVerify is not supported on gRPC channels"):
        grpc_tls(simple, simple.policy.tls, None)
    uri_only = cluster(ClientTls(mode="ISTIO_MUTUAL", subject_alt_names=(REVIEWS,)))
    with pytest.raises(TlsUnavailable, match="grpcio cannot verify URI subjectAltNames"):
        grpc_tls(uri_only, uri_only.policy.tls, None)


def test_file_based_contexts_follow_the_files(tmp_path: Path) -> None:
    ca = MeshCA.create_root("cluster.local")
    bundle = ca.issue_bundle(SpiffeId.for_workload("default", "productpage"))
    files = {"c": tmp_path / "c.pem", "k": tmp_path / "k.pem", "ca": tmp_path / "ca.pem"}
    files["c"].write_bytes(bundle.cert_chain_pem)
    files["k"].write_bytes(bundle.private_key_pem)
    files["ca"].write_bytes(bundle.trust_bundle_pem)
    now = [100.0]
    contexts = UpstreamTlsContexts(lambda: None, clock=lambda: now[0], recheck_files_s=5.0)
    mutual = cluster(ClientTls(mode="MUTUAL", client_certificate=str(files["c"]), private_key=str(files["k"]),
                               ca_certificates=str(files["ca"])))
    first = contexts.for_cluster(mutual)
    renewed = ca.issue_bundle(SpiffeId.for_workload("default", "productpage"))
    # A Kubernetes-style swap: new files renamed over the old ones.
    for name, data in (("c", renewed.cert_chain_pem), ("k", renewed.private_key_pem)):
        staging = tmp_path / f"{name}.new"
        staging.write_bytes(data)
        os.replace(staging, files[name])
    now[0] += 1.0
    assert contexts.for_cluster(mutual) is first  # not looked at before recheck_files_s
    now[0] += 5.0
    second = contexts.for_cluster(mutual)
    assert second is not first
    # Files that do not load: the previous context stays (and is retried later).
    files["k"].write_bytes(b"garbage")
    now[0] += 6.0
    assert contexts.for_cluster(mutual) is second


@pytest.mark.asyncio
async def test_grpc_channels_of_a_rotated_certificate_are_retired() -> None:
    from meshlib.grpc.endpoints import EndpointPool

    ca = MeshCA.create_root("cluster.local")
    source = StaticCertificateSource(ca.issue_bundle(SpiffeId.for_workload("default", "productpage")))
    contexts = UpstreamTlsContexts(lambda: source)
    istio = cluster(ClientTls(mode="ISTIO_MUTUAL"))
    endpoint = istio.endpoints[0]
    pool = EndpointPool()
    first = pool.acquire(endpoint, contexts.for_grpc_cluster(istio))
    pool.release(first)
    assert pool.acquire(endpoint, contexts.for_grpc_cluster(istio)) is first  # cached credentials, same channel
    pool.release(first)
    source.replace(ca.issue_bundle(SpiffeId.for_workload("default", "productpage")))
    second = pool.acquire(endpoint, contexts.for_grpc_cluster(istio))
    assert second is not first and first.retired and len(pool) == 1
    pool.release(second)
    await pool.close()
