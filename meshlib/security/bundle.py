"""A workload's credentials (:class:`CertBundle`) and where they come from (:class:`CertificateSource`).

A ``CertBundle`` is immutable: rotation produces a new bundle and notifies subscribers, who
rebuild their SSL contexts. Sources: :class:`StaticCertificateSource` (fixed, e.g. in tests),
``meshlib.security.file_source.FileCertificateSource`` (watched files) and
``meshlib.security.ca_client.CaClientCertificateSource`` (CSR to the control plane's CA).

Example::

    bundle = CertBundle.from_pem(chain_pem, key_pem, trust_pem)   # checks key ↔ leaf, parses the SPIFFE ID
    source = StaticCertificateSource(bundle)
    unsubscribe = source.subscribe(lambda b: print("rotated to", b.spiffe_id))
    await source.start()
    source.current().spiffe_id        # SpiffeId('cluster.local', '/ns/default/sa/reviews')
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from meshlib.security.errors import CertificateInvalid, NoCertificateYet
from meshlib.security.spiffe import SpiffeId

_log = logging.getLogger(__name__)

MAX_PEM_BYTES = 1 << 20  # 1 MiB: more than any sane chain or bundle
MAX_CERTS_PER_PEM = 64


@dataclass(frozen=True)
class CertBundle:
    """One workload's current credentials.

    ``cert_chain_pem`` holds the leaf first, then any intermediates (not the root);
    ``trust_bundle_pem`` the CA certificates used to verify peers.
    """

    cert_chain_pem: bytes
    private_key_pem: bytes
    trust_bundle_pem: bytes
    spiffe_id: SpiffeId
    not_after: datetime

    @classmethod
    def from_pem(cls, cert_chain_pem: bytes, private_key_pem: bytes, trust_bundle_pem: bytes) -> CertBundle:
        """Build a bundle from PEM bytes, checking that the key matches the leaf and the leaf is an SVID.

        Raises :class:`CertificateInvalid` with a clear message otherwise.
        """
        chain = load_pem_certificates(cert_chain_pem, "certificate chain")
        load_pem_certificates(trust_bundle_pem, "trust bundle")
        key = load_private_key(private_key_pem)
        leaf = chain[0]
        if public_key_bytes(key.public_key()) != public_key_bytes(leaf.public_key()):
            raise CertificateInvalid("private key does not match the leaf certificate's public key")
        spiffe_id = spiffe_id_of(leaf)
        return cls(cert_chain_pem, private_key_pem, trust_bundle_pem, spiffe_id, leaf.not_valid_after_utc)

    @property
    def leaf(self) -> x509.Certificate:
        """The leaf certificate, parsed."""
        return load_pem_certificates(self.cert_chain_pem, "certificate chain")[0]

    @property
    def not_before(self) -> datetime:
        """Start of the leaf's validity period (UTC)."""
        return self.leaf.not_valid_before_utc


@runtime_checkable
class CertificateSource(Protocol):
    """Supplies the workload's current :class:`CertBundle` and announces rotations."""

    def current(self) -> CertBundle:
        """The current bundle; raises :class:`NoCertificateYet` when there is none yet."""
        ...

    def subscribe(self, callback: Callable[[CertBundle], None]) -> Callable[[], None]:
        """Call ``callback(bundle)`` after each rotation; returns a function that unsubscribes."""
        ...

    async def start(self) -> None:
        """Load/fetch the first bundle and begin watching/rotating."""
        ...

    async def stop(self) -> None:
        """Stop background work; ``current()`` keeps returning the last bundle."""
        ...


class Subscribers:
    """A list of rotation callbacks; a failing callback is logged and does not stop the others."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[CertBundle], None]] = []

    def add(self, callback: Callable[[CertBundle], None]) -> Callable[[], None]:
        """Register ``callback``; return its unsubscribe function (idempotent)."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    def notify(self, bundle: CertBundle) -> None:
        """Call every callback with ``bundle``."""
        for callback in list(self._callbacks):
            try:
                callback(bundle)
            except Exception:
                _log.exception("certificate rotation subscriber %r failed", callback)


class StaticCertificateSource:
    """A source holding one fixed bundle (tests, or credentials managed elsewhere).

    :meth:`replace` swaps the bundle and notifies subscribers, which makes it handy
    for rotation tests.
    """

    def __init__(self, bundle: CertBundle | None = None) -> None:
        self._bundle = bundle
        self._subscribers = Subscribers()

    def current(self) -> CertBundle:
        if self._bundle is None:
            raise NoCertificateYet("no certificate has been set on this StaticCertificateSource")
        return self._bundle

    def subscribe(self, callback: Callable[[CertBundle], None]) -> Callable[[], None]:
        return self._subscribers.add(callback)

    def replace(self, bundle: CertBundle) -> None:
        """Install ``bundle`` and notify subscribers."""
        self._bundle = bundle
        self._subscribers.notify(bundle)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


# --- PEM helpers -------------------------------------------------------------------------------------------


def load_pem_certificates(pem: bytes, what: str = "PEM") -> list[x509.Certificate]:
    """Parse one or more PEM certificates, with size and count limits; :class:`CertificateInvalid` on error."""
    if len(pem) > MAX_PEM_BYTES:
        raise CertificateInvalid(f"{what} is larger than {MAX_PEM_BYTES} bytes")
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertificateInvalid(f"{what} is not valid PEM certificates: {exc}") from None
    if not certs:
        raise CertificateInvalid(f"{what} contains no certificate")
    if len(certs) > MAX_CERTS_PER_PEM:
        raise CertificateInvalid(f"{what} holds more than {MAX_CERTS_PER_PEM} certificates")
    return certs


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def load_private_key(pem: bytes) -> PrivateKey:
    """Parse an unencrypted PEM private key (EC, RSA or Ed25519); :class:`CertificateInvalid` on error."""
    if len(pem) > MAX_PEM_BYTES:
        raise CertificateInvalid(f"private key is larger than {MAX_PEM_BYTES} bytes")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateInvalid(f"private key is not a valid unencrypted PEM key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise CertificateInvalid(f"unsupported private key type {type(key).__name__}")
    return key


def public_key_bytes(key: object) -> bytes:
    """DER SubjectPublicKeyInfo of a public key (for equality checks)."""
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise CertificateInvalid(f"unsupported public key type {type(key).__name__}")
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def spiffe_ids_in(cert: x509.Certificate) -> list[str]:
    """Every ``spiffe://`` URI SAN of ``cert`` (raw strings, unvalidated)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.lower().startswith("spiffe://")]


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID of an X.509-SVID: exactly one URI SAN, a valid ``spiffe://`` ID."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateInvalid("certificate has no subjectAltName, so no SPIFFE ID") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise CertificateInvalid(f"an X.509-SVID must have exactly one URI SAN, this one has {len(uris)}")
    return SpiffeId.parse(uris[0])
