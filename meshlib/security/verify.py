"""Verify an X.509-SVID chain against a trust bundle and an expected identity.

RFC 5280 path validation is done by ``cryptography.x509.verification`` (the client-verifier
policy, which accepts URI-only leaves); the SPIFFE leaf rules are checked here on top:
``cA=false``, no ``keyCertSign``/``cRLSign``, exactly one URI SAN holding a valid SPIFFE ID
with a non-empty path. Each kind of failure gets its own exception and a plain message::

    >>> verify_svid(chain_pem, trust_pem, expected="spiffe://cluster.local/ns/default/sa/reviews")
    SpiffeId(trust_domain='cluster.local', path='/ns/default/sa/reviews')

Failures: :class:`CertificateExpired` (outside the validity period, with the dates),
:class:`IdentityMismatch` (wrong trust domain, wrong identity),
:class:`CertificateInvalid` (not signed by the bundle, not an SVID, malformed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from meshlib.security.bundle import load_pem_certificates, spiffe_id_of
from meshlib.security.errors import CertificateExpired, CertificateInvalid, IdentityMismatch
from meshlib.security.spiffe import SpiffeId

MAX_CHAIN_DEPTH = 8

Expected = SpiffeId | str | Iterable[SpiffeId | str] | Callable[[SpiffeId], bool] | None
CertsInput = bytes | Sequence[x509.Certificate]


def verify_svid(
    chain: CertsInput,
    trust_bundle: CertsInput,
    *,
    expected: Expected = None,
    trust_domain: str | None = None,
    now: datetime | None = None,
) -> SpiffeId:
    """Verify ``chain`` (leaf first) against ``trust_bundle``; return the leaf's SPIFFE ID.

    ``expected`` may be one ID, a collection of acceptable IDs, a predicate, or None (any ID
    the bundle vouches for). ``trust_domain`` additionally requires the ID to be in that trust
    domain. ``now`` defaults to the current time.
    """
    certs = _as_certs(chain, "certificate chain")
    anchors = _as_certs(trust_bundle, "trust bundle")
    leaf, intermediates = certs[0], list(certs[1:])
    when = now or datetime.now(UTC)

    spiffe_id = _check_leaf(leaf)
    for cert in certs:
        _check_validity(cert, when, "leaf" if cert is leaf else "intermediate")

    verifier = PolicyBuilder().store(Store(anchors)).time(when).max_chain_depth(MAX_CHAIN_DEPTH).build_client_verifier()
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise CertificateInvalid(f"certificate of {spiffe_id} is not signed by the trust bundle: {exc}") from None

    if trust_domain is not None and not spiffe_id.member_of(trust_domain):
        raise IdentityMismatch(f"peer {spiffe_id} is not in trust domain {trust_domain.lower()!r}")
    check_expected_identity(spiffe_id, expected)
    return spiffe_id


def check_expected_identity(spiffe_id: SpiffeId, expected: Expected) -> None:
    """Raise :class:`IdentityMismatch` unless ``spiffe_id`` is acceptable per ``expected``."""
    if expected is None:
        return
    if callable(expected) and not isinstance(expected, SpiffeId | str):
        if not expected(spiffe_id):
            raise IdentityMismatch(f"peer identity {spiffe_id} is not accepted")
        return
    wanted = [_as_id(expected)] if isinstance(expected, SpiffeId | str) else [_as_id(e) for e in expected]
    if spiffe_id in wanted:
        return
    if wanted and all(not spiffe_id.member_of(w.trust_domain) for w in wanted):
        tds = sorted({w.trust_domain for w in wanted})
        raise IdentityMismatch(f"peer {spiffe_id} is in trust domain {spiffe_id.trust_domain!r}, expected {tds}")
    shown = ", ".join(str(w) for w in wanted[:5]) + (", …" if len(wanted) > 5 else "")
    raise IdentityMismatch(f"peer identity {spiffe_id} is not the expected one ({shown or 'none allowed'})")


def _as_id(value: SpiffeId | str) -> SpiffeId:
    return value if isinstance(value, SpiffeId) else SpiffeId.parse(value)


def _as_certs(value: CertsInput, what: str) -> list[x509.Certificate]:
    if isinstance(value, bytes | bytearray):
        return load_pem_certificates(bytes(value), what)
    certs = list(value)
    if not certs:
        raise CertificateInvalid(f"{what} is empty")
    return certs


def _check_validity(cert: x509.Certificate, when: datetime, role: str) -> None:
    if when < cert.not_valid_before_utc:
        raise CertificateExpired(
            f"{role} certificate is not valid before {cert.not_valid_before_utc.isoformat()} (now {when.isoformat()})"
        )
    if when > cert.not_valid_after_utc:
        raise CertificateExpired(f"{role} certificate expired at {cert.not_valid_after_utc.isoformat()}")


def _check_leaf(leaf: x509.Certificate) -> SpiffeId:
    spiffe_id = spiffe_id_of(leaf)
    if not spiffe_id.path:
        raise CertificateInvalid(f"leaf SPIFFE ID {spiffe_id} has no path (that form is reserved for CAs)")
    try:
        if leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise CertificateInvalid(f"certificate of {spiffe_id} is a CA certificate, not a leaf SVID")
    except x509.ExtensionNotFound:
        pass
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateInvalid(f"leaf SVID {spiffe_id} has no KeyUsage extension") from None
    if usage.key_cert_sign or usage.crl_sign:
        raise CertificateInvalid(f"leaf SVID {spiffe_id} must not have keyCertSign or cRLSign")
    if not usage.digital_signature:
        raise CertificateInvalid(f"leaf SVID {spiffe_id} lacks the digitalSignature key usage")
    return spiffe_id
