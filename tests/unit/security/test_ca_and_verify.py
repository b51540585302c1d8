"""MeshCA issues X.509-SVIDs that follow the SPIFFE rules; verify_svid gives one clear error per failure."""

from __future__ import annotations

import contextlib
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshlib.security import (
    CertBundle,
    CertificateExpired,
    CertificateInvalid,
    IdentityMismatch,
    IssuanceRefused,
    MeshCA,
    SpiffeId,
    verify_svid,
)
from meshlib.security.ca import make_csr, new_private_key

REVIEWS = SpiffeId.for_workload("default", "reviews")


@pytest.fixture(scope="module")
def root() -> MeshCA:
    return MeshCA.create_root("cluster.local")


@pytest.fixture(scope="module")
def intermediate(root: MeshCA) -> MeshCA:
    return root.create_intermediate()


def test_leaf_follows_x509_svid_rules(intermediate: MeshCA) -> None:
    bundle = intermediate.issue_bundle(REVIEWS, dns_names=["reviews.default.svc.cluster.local"])
    leaf = bundle.leaf
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # empty subject ⇒ SAN critical
    assert leaf.subject == x509.Name([])
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [REVIEWS.uri]
    assert san.value.get_values_for_type(x509.DNSName) == ["reviews.default.svc.cluster.local"]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_encipherment
    assert not usage.value.key_cert_sign and not usage.value.crl_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = intermediate.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    # chain: leaf + intermediate; trust bundle: the root only
    assert len(x509.load_pem_x509_certificates(bundle.cert_chain_pem)) == 2
    assert x509.load_pem_x509_certificates(bundle.trust_bundle_pem) == [intermediate.root]
    assert bundle.not_after - datetime.now(UTC) <= timedelta(hours=24)


def test_ca_certificates_carry_key_cert_sign_and_trust_domain_id(intermediate: MeshCA) -> None:
    for cert in intermediate.chain:
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local"]


def test_verify_accepts_good_chain(intermediate: MeshCA) -> None:
    bundle = intermediate.issue_bundle(REVIEWS)
    assert verify_svid(bundle.cert_chain_pem, bundle.trust_bundle_pem, expected=REVIEWS) == REVIEWS
    assert verify_svid(bundle.cert_chain_pem, bundle.trust_bundle_pem, expected=[str(REVIEWS)]) == REVIEWS
    assert verify_svid(bundle.cert_chain_pem, bundle.trust_bundle_pem, trust_domain="CLUSTER.local") == REVIEWS


def test_verify_refuses_expired(root: MeshCA) -> None:
    bundle = root.issue_bundle(REVIEWS, ttl=timedelta(hours=1))
    later = datetime.now(UTC) + timedelta(hours=2)
    with pytest.raises(CertificateExpired, match="leaf certificate expired at"):
        verify_svid(bundle.cert_chain_pem, bundle.trust_bundle_pem, now=later)


def test_verify_refuses_wrong_identity_and_trust_domain(root: MeshCA) -> None:
    bundle = root.issue_bundle(REVIEWS)
    with pytest.raises(IdentityMismatch, match="is not the expected one"):
        verify_svid(bundle.cert_chain_pem, bundle.trust_bundle_pem, expected="spiffe://cluster.local/ns/default/sa/x")
    with pytest.raises(IdentityMismatch, match=r"in trust domain 'cluster\.local', expected"):
        verify_svid(bundle.cert_chain_pem, bundle.trust_bundle_pem, expected="spiffe://other.org/ns/default/sa/x")
    with pytest.raises(IdentityMismatch, match=r"not in trust domain 'other\.org'"):
        verify_svid(bundle.cert_chain_pem, bundle.trust_bundle_pem, trust_domain="other.org")


def test_verify_refuses_chain_not_signed_by_bundle(root: MeshCA) -> None:
    bundle = root.issue_bundle(REVIEWS)
    stranger = MeshCA.create_root("cluster.local")
    with pytest.raises(CertificateInvalid, match="not signed by the trust bundle"):
        verify_svid(bundle.cert_chain_pem, stranger.trust_bundle_pem)


def test_verify_refuses_missing_intermediate(intermediate: MeshCA) -> None:
    bundle = intermediate.issue_bundle(REVIEWS)
    with pytest.raises(CertificateInvalid, match="not signed by the trust bundle"):
        verify_svid([bundle.leaf], bundle.trust_bundle_pem)


def test_verify_refuses_ca_cert_as_leaf(root: MeshCA) -> None:
    with pytest.raises(CertificateInvalid, match="has no path"):
        verify_svid([root.cert], [root.root])


def test_sign_csr_issues_only_the_authenticated_identity(root: MeshCA) -> None:
    key = new_private_key()
    chain = root.sign_csr(make_csr(REVIEWS, key), REVIEWS)
    assert verify_svid(chain[:-1], [root.root]) == REVIEWS
    with pytest.raises(IssuanceRefused, match="but the caller is"):
        root.sign_csr(make_csr(SpiffeId.for_workload("default", "admin"), key), REVIEWS)
    with pytest.raises(IssuanceRefused, match="DNS name"):
        root.sign_csr(make_csr(REVIEWS, key, dns_names=["evil.example.com"]), REVIEWS)
    with pytest.raises(IssuanceRefused, match="not a valid PEM"):
        root.sign_csr(b"garbage", REVIEWS)
    with pytest.raises(IssuanceRefused, match="trust domain"):
        root.issue(SpiffeId.parse("spiffe://other.org/ns/a/sa/b"), key.public_key())


def test_ttl_is_capped_by_ca_expiry() -> None:
    short = MeshCA.create_root(ttl=timedelta(hours=2))
    bundle = short.issue_bundle(REVIEWS, ttl=timedelta(days=30))
    assert bundle.not_after <= short.cert.not_valid_after_utc


def test_save_and_load_round_trip(tmp_path: Path, intermediate: MeshCA) -> None:
    intermediate.save(tmp_path)
    assert (tmp_path / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    loaded = MeshCA.load(tmp_path)
    assert loaded.chain == intermediate.chain
    assert loaded.trust_domain == "cluster.local"
    bundle = loaded.issue_bundle(REVIEWS)
    assert verify_svid(bundle.cert_chain_pem, intermediate.trust_bundle_pem) == REVIEWS


def test_bundle_from_pem_checks_key_matches(root: MeshCA) -> None:
    a = root.issue_bundle(REVIEWS)
    b = root.issue_bundle(REVIEWS)
    assert CertBundle.from_pem(a.cert_chain_pem, a.private_key_pem, a.trust_bundle_pem).spiffe_id == REVIEWS
    with pytest.raises(CertificateInvalid, match="does not match"):
        CertBundle.from_pem(a.cert_chain_pem, b.private_key_pem, a.trust_bundle_pem)


def test_python_ssl_strict_mode_accepts_the_svids(tmp_path: Path, intermediate: MeshCA) -> None:
    """Python ≥3.13 sets VERIFY_X509_STRICT by default: AKI/SKI must be present (section F.6)."""
    bundle = intermediate.issue_bundle(REVIEWS)
    (tmp_path / "chain.pem").write_bytes(bundle.cert_chain_pem)
    (tmp_path / "key.pem").write_bytes(bundle.private_key_pem)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=bundle.trust_bundle_pem.decode())
    server.verify_flags |= ssl.VERIFY_X509_STRICT
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=bundle.trust_bundle_pem.decode())
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    client.check_hostname = False
    client.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    cli = client.wrap_bio(c_in, c_out, server_side=False)
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (cli, srv):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    peer = srv.getpeercert()
    assert peer is not None
    assert peer["subjectAltName"] == (("URI", REVIEWS.uri),)
