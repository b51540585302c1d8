"""The mesh certificate authority: root / intermediate CAs and X.509-SVIDs, built on ``cryptography``.

Certificates follow the X.509-SVID rules (spiffe/spiffe ``standards/X509-SVID.md``):

- leaf: empty subject, a **critical** subjectAltName with exactly one URI (the SPIFFE ID) plus
  optional DNS names (grpcio's ``ssl_channel_credentials`` only checks DNS/IP SANs),
  ``BasicConstraints(ca=False)``, KeyUsage ``digitalSignature + keyEncipherment`` (critical),
  ExtendedKeyUsage ``serverAuth + clientAuth``, AKI of the issuer and its own SKI;
- CA: ``BasicConstraints(ca=True)``, KeyUsage ``keyCertSign + cRLSign`` (critical), SKI (+ AKI when
  not self-signed) and the trust domain's SPIFFE ID (no path) as URI SAN.

Keys are EC P-256. Example::

    root = MeshCA.create_root("cluster.local")
    ca = root.create_intermediate()                   # optional: sign workloads with an intermediate
    bundle = ca.issue_bundle(SpiffeId.for_workload("default", "reviews"), dns_names=["reviews.default.svc"])
    bundle.cert_chain_pem       # leaf + intermediate;  bundle.trust_bundle_pem: the root

    chain = ca.sign_csr(csr_pem, SpiffeId.for_workload("default", "reviews"))   # CSR in, chain out

On disk (``MeshCA.save`` / ``MeshCA.load``) the layout is Istio's plugged-in CA one:
``ca-cert.pem``, ``ca-key.pem``, ``cert-chain.pem`` (this CA up to the root) and ``root-cert.pem``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshlib.security.bundle import (
    CertBundle,
    PrivateKey,
    load_pem_certificates,
    load_private_key,
    public_key_bytes,
    spiffe_id_of,
)
from meshlib.security.errors import CertificateInvalid, IssuanceRefused
from meshlib.security.spiffe import DEFAULT_TRUST_DOMAIN, SpiffeId

_log = logging.getLogger(__name__)

DEFAULT_SVID_TTL = timedelta(hours=24)
MAX_SVID_TTL = timedelta(days=90)
DEFAULT_ROOT_TTL = timedelta(days=3650)
DEFAULT_INTERMEDIATE_TTL = timedelta(days=365)
MAX_DNS_NAMES = 32
# Backdate notBefore a little so peers with slightly slow clocks accept a fresh certificate.
CLOCK_SKEW_ALLOWANCE = timedelta(minutes=1)

CA_CERT_FILE = "ca-cert.pem"
CA_KEY_FILE = "ca-key.pem"
CA_CHAIN_FILE = "cert-chain.pem"
ROOT_CERT_FILE = "root-cert.pem"
# Workload credential files written by ``meshlib ca issue`` (Istio's /etc/certs names).
WORKLOAD_CHAIN_FILE = "cert-chain.pem"
WORKLOAD_KEY_FILE = "key.pem"
WORKLOAD_ROOT_FILE = "root-cert.pem"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC (the default clock)."""
    return datetime.now(UTC)


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM of ``key``."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def certs_pem(certs: Sequence[x509.Certificate]) -> bytes:
    """Concatenated PEM of ``certs``."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def make_csr(spiffe_id: SpiffeId | None, key: PrivateKey, dns_names: Sequence[str] = ()) -> bytes:
    """A PEM CSR asking for ``spiffe_id`` (URI SAN; None = whatever the CA authenticates) and ``dns_names``."""
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id.uri)] if spiffe_id else []
    names += [x509.DNSName(d) for d in dns_names]
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    algorithm = None if isinstance(key, _ED25519_TYPES) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


class MeshCA:
    """A CA that signs X.509-SVIDs for one trust domain.

    ``chain`` is this CA's certificate followed by its issuers up to and including the root;
    ``root`` is the last element (the trust anchor workloads verify against).
    """

    def __init__(
        self, key: PrivateKey, chain: Sequence[x509.Certificate], trust_domain: str, clock: Clock = utc_now
    ) -> None:
        if not chain:
            raise CertificateInvalid("a CA needs at least its own certificate")
        if public_key_bytes(key.public_key()) != public_key_bytes(chain[0].public_key()):
            raise CertificateInvalid("CA private key does not match the CA certificate")
        if not _is_ca(chain[0]):
            raise CertificateInvalid("CA certificate lacks BasicConstraints ca=true")
        self.key = key
        self.chain: tuple[x509.Certificate, ...] = tuple(chain)
        self.trust_domain = SpiffeId.for_trust_domain(trust_domain).trust_domain
        self.clock = clock

    @property
    def cert(self) -> x509.Certificate:
        """This CA's own certificate."""
        return self.chain[0]

    @property
    def root(self) -> x509.Certificate:
        """The root (trust anchor) of this CA's chain."""
        return self.chain[-1]

    @property
    def trust_bundle_pem(self) -> bytes:
        """PEM of the root certificate: what workloads verify peers against."""
        return certs_pem([self.root])

    # --- creating CAs ----------------------------------------------------------------------------------

    @classmethod
    def create_root(
        cls,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        *,
        ttl: timedelta = DEFAULT_ROOT_TTL,
        clock: Clock = utc_now,
        organization: str = "meshlib",
    ) -> MeshCA:
        """A new self-signed root CA for ``trust_domain``."""
        td = SpiffeId.for_trust_domain(trust_domain)
        key = new_private_key()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                x509.NameAttribute(NameOID.COMMON_NAME, f"meshlib root CA {td.trust_domain}"),
            ]
        )
        now = clock()
        builder = _ca_builder(
            subject, subject, key.public_key(), trust_domain=td, not_before=now, not_after=now + ttl, issuer_key=None
        )
        cert = builder.sign(key, hashes.SHA256())
        return cls(key, [cert], td.trust_domain, clock)

    def create_intermediate(self, *, ttl: timedelta = DEFAULT_INTERMEDIATE_TTL, name: str = "") -> MeshCA:
        """A new intermediate CA signed by this one (same trust domain), valid at most as long as this CA."""
        key = new_private_key()
        td = SpiffeId.for_trust_domain(self.trust_domain)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshlib"),
                x509.NameAttribute(NameOID.COMMON_NAME, name or f"meshlib intermediate CA {td.trust_domain}"),
            ]
        )
        now = self.clock()
        not_after = min(now + ttl, self.cert.not_valid_after_utc)
        builder = _ca_builder(
            subject,
            self.cert.subject,
            key.public_key(),
            trust_domain=td,
            not_before=now,
            not_after=not_after,
            issuer_key=self.key,
        )
        cert = builder.sign(self.key, _hash_for(self.key))
        return MeshCA(key, [cert, *self.chain], self.trust_domain, self.clock)

    # --- issuing SVIDs ---------------------------------------------------------------------------------

    def issue(
        self,
        spiffe_id: SpiffeId,
        public_key: object,
        *,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        ttl: timedelta = DEFAULT_SVID_TTL,
    ) -> list[x509.Certificate]:
        """Sign an X.509-SVID for ``public_key``; return the chain ``[leaf, intermediates…, root]``.

        ``dns_names`` / ``ip_addresses`` add DNS / IP SANs next to the URI SAN (grpcio and other
        hostname-checking clients look only at those). The validity is capped by ``MAX_SVID_TTL``
        and by this CA's own expiry.
        """
        if not spiffe_id.member_of(self.trust_domain):
            raise IssuanceRefused(f"{spiffe_id} is not in this CA's trust domain {self.trust_domain!r}")
        if not spiffe_id.path:
            raise IssuanceRefused("a workload SPIFFE ID needs a path")
        if ttl <= timedelta(0):
            raise IssuanceRefused("certificate lifetime must be positive")
        if len(dns_names) > MAX_DNS_NAMES:
            raise IssuanceRefused(f"at most {MAX_DNS_NAMES} DNS names")
        pub_der = public_key_bytes(public_key)
        loaded = serialization.load_der_public_key(pub_der)
        if not isinstance(loaded, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
            raise CertificateInvalid("unsupported public key type")
        now = self.clock()
        not_after = min(now + min(ttl, MAX_SVID_TTL), self.cert.not_valid_after_utc)
        if not_after <= now:
            raise IssuanceRefused("the CA certificate has expired")
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id.uri)]
        names += [x509.DNSName(_check_dns_name(d)) for d in dns_names]
        names += [x509.IPAddress(_check_ip(ip)) for ip in ip_addresses]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.cert.subject)
            .public_key(loaded)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=True)  # empty subject ⇒ critical
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(loaded), critical=False)
            .add_extension(_aki_of(self.cert), critical=False)
        )
        leaf = builder.sign(self.key, _hash_for(self.key))
        return [leaf, *self.chain]

    def sign_csr(
        self,
        csr_pem: bytes,
        spiffe_id: SpiffeId,
        *,
        ttl: timedelta = DEFAULT_SVID_TTL,
        allowed_dns_names: Callable[[str], bool] | None = None,
    ) -> list[x509.Certificate]:
        """Sign a PEM CSR for the identity the *caller was authenticated as* (``spiffe_id``).

        The CSR's own URI SAN, when present, must equal ``spiffe_id`` — a CSR cannot ask for
        somebody else's identity. Its DNS SANs are copied only when ``allowed_dns_names`` accepts
        each of them; otherwise the request is refused.
        """
        if len(csr_pem) > 64 * 1024:
            raise IssuanceRefused("CSR is larger than 64 KiB")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise IssuanceRefused(f"CSR is not a valid PEM certificate request: {exc}") from None
        if not csr.is_signature_valid:
            raise IssuanceRefused("CSR signature does not verify (proof of key possession failed)")
        requested_uris: list[str] = []
        requested_dns: list[str] = []
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            requested_uris = san.get_values_for_type(x509.UniformResourceIdentifier)
            requested_dns = san.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            pass
        if len(requested_uris) > 1:
            raise IssuanceRefused(f"CSR asks for {len(requested_uris)} URI SANs; an SVID has exactly one")
        if requested_uris and requested_uris[0] != spiffe_id.uri:
            raise IssuanceRefused(f"CSR asks for {requested_uris[0][:200]!r} but the caller is {spiffe_id}")
        for name in requested_dns:
            if allowed_dns_names is None or not allowed_dns_names(name):
                raise IssuanceRefused(f"CSR asks for DNS name {name[:200]!r}, which this caller may not have")
        return self.issue(spiffe_id, csr.public_key(), dns_names=requested_dns, ttl=ttl)

    def issue_bundle(
        self,
        spiffe_id: SpiffeId,
        *,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        ttl: timedelta = DEFAULT_SVID_TTL,
    ) -> CertBundle:
        """Generate a key pair and an SVID for it; return them as a :class:`CertBundle` (chain without the root)."""
        key = new_private_key()
        chain = self.issue(spiffe_id, key.public_key(), dns_names=dns_names, ip_addresses=ip_addresses, ttl=ttl)
        return CertBundle(
            cert_chain_pem=certs_pem(chain[:-1]),
            private_key_pem=private_key_pem(key),
            trust_bundle_pem=self.trust_bundle_pem,
            spiffe_id=spiffe_id,
            not_after=chain[0].not_valid_after_utc,
        )

    # --- persistence -----------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the CA in Istio's ``cacerts`` layout; the key file is created 0600."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        write_private_file(out / CA_KEY_FILE, private_key_pem(self.key))
        (out / CA_CERT_FILE).write_bytes(certs_pem([self.cert]))
        (out / CA_CHAIN_FILE).write_bytes(certs_pem(self.chain))
        (out / ROOT_CERT_FILE).write_bytes(certs_pem([self.root]))
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, clock: Clock = utc_now) -> MeshCA:
        """Load a CA written by :meth:`save` (or Istio's ``cacerts`` secret layout)."""
        src = Path(directory)
        try:
            key_file = src / CA_KEY_FILE
            if key_file.stat().st_mode & 0o077:
                _log.warning("%s is readable by other users; the CA key should be mode 0600", key_file)
            key = load_private_key(key_file.read_bytes())
            chain_file = src / CA_CHAIN_FILE
            if chain_file.exists():
                chain = load_pem_certificates(chain_file.read_bytes(), str(chain_file))
            else:
                chain = load_pem_certificates((src / CA_CERT_FILE).read_bytes(), str(src / CA_CERT_FILE))
        except OSError as exc:
            raise CertificateInvalid(f"cannot read CA from {src}: {exc.strerror}: {exc.filename}") from None
        root_file = src / ROOT_CERT_FILE
        if root_file.exists():
            root = load_pem_certificates(root_file.read_bytes(), str(root_file))[0]
            if chain[-1] != root:
                chain.append(root)
        trust_domain = spiffe_id_of(chain[0]).trust_domain
        return cls(key, chain, trust_domain, clock)


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


# --- builders ----------------------------------------------------------------------------------------------

_ED25519_TYPES = (ed25519.Ed25519PrivateKey,)


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, _ED25519_TYPES) else hashes.SHA256()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _aki_of(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    *,
    trust_domain: SpiffeId,
    not_before: datetime,
    not_after: datetime,
    issuer_key: PrivateKey | None,
) -> x509.CertificateBuilder:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(trust_domain.uri)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer_key is not None:
        issuer_pub = issuer_key.public_key()
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_pub), critical=False)
    else:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
    return builder


_DNS_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-*")


def _check_dns_name(name: str) -> str:
    if not name or len(name) > 253:
        raise IssuanceRefused(f"DNS name {name[:80]!r} must be 1-253 characters")
    for label in name.rstrip(".").split("."):
        if not label or len(label) > 63 or any(c not in _DNS_LABEL_CHARS for c in label):
            raise IssuanceRefused(f"DNS name {name[:80]!r} is not a valid host name")
    return name


def _check_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise IssuanceRefused(f"{text[:80]!r} is not an IP address") from None
