"""The control plane as CA: ``istio.v1.auth.IstioCertificateService/CreateCertificate``.

A workload sends a CSR and gets back ``cert_chain = [leaf, intermediates…, root]``. **Nothing is
issued to a caller that has not proved who it is**, and a caller only ever gets *its own*
identity. A caller proves its identity in exactly one of these ways:

1. **Bootstrap token** — ``authorization: Bearer <token>`` metadata. Tokens are per identity and
   come from a tokens file (:class:`BootstrapTokens`; one ``<spiffe-id> <token> [dns-name …]`` per
   line). The token's identity is the one issued. Needs a TLS channel (the token is a secret).
2. **Pre-issued certificate** — the call arrives over mTLS with a certificate this CA's trust
   bundle verifies; the caller may renew exactly that SPIFFE ID (and the DNS names it already had).
3. **Local trust on a Unix socket** — see :mod:`meshlib.security.ca_local` (peer uid → identity).

If a bearer token is present it alone decides (a bad token is refused; there is no fallback to
the certificate). The CSR's own URI SAN, when present, must equal the authenticated identity.
Lifetime: ``validity_duration`` seconds, default 24 h, refused above ``max_ttl``.

Refusals are gRPC errors: ``UNAUTHENTICATED`` (no or bad credentials), ``PERMISSION_DENIED``
(asking for another identity / DNS name), ``INVALID_ARGUMENT`` (bad CSR, lifetime). Every
issuance and refusal is logged and counted in :meth:`CertificateAuthorityService.status`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc

from meshlib.security.bundle import load_pem_certificates, spiffe_id_of
from meshlib.security.ca import DEFAULT_SVID_TTL, MeshCA, certs_pem
from meshlib.security.ca_proto import METHOD_NAME, SERVICE_NAME, IstioCertificateRequest, IstioCertificateResponse
from meshlib.security.errors import InvalidSpiffeId, IssuanceRefused, SecurityError
from meshlib.security.spiffe import SpiffeId
from meshlib.security.table_file import table_lines
from meshlib.security.verify import verify_svid

_log = logging.getLogger(__name__)

DEFAULT_MAX_TTL = timedelta(days=7)
MIN_TOKEN_LENGTH = 16
MAX_TOKENS_FILE_BYTES = 1 << 20
MAX_RECENT_REFUSALS = 20


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: the identity it may receive, how it proved it, and its allowed DNS SANs."""

    spiffe_id: SpiffeId
    method: str  # "token" | "certificate" | "local"
    dns_names: frozenset[str] = frozenset()


class Refused(IssuanceRefused):
    """An issuance refusal with the gRPC status code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class _TokenEntry:
    spiffe_id: SpiffeId
    dns_names: frozenset[str]


class BootstrapTokens:
    """Per-identity bootstrap tokens, loaded from a file; only SHA-256 digests are kept in memory.

    File format (``#`` comments and blank lines ignored)::

        spiffe://cluster.local/ns/default/sa/reviews  3q2-long-random-token  reviews.default.svc
        spiffe://cluster.local/ns/default/sa/ratings  another-random-token
    """

    def __init__(self, entries: Mapping[str, tuple[SpiffeId, Sequence[str]]] | None = None) -> None:
        self._by_digest: dict[bytes, _TokenEntry] = {}
        for token, (spiffe_id, dns) in (entries or {}).items():
            self.add(token, spiffe_id, dns)

    def add(self, token: str, spiffe_id: SpiffeId, dns_names: Sequence[str] = ()) -> None:
        """Accept ``token`` as proof of ``spiffe_id``."""
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"bootstrap tokens must be at least {MIN_TOKEN_LENGTH} characters")
        self._by_digest[_digest(token)] = _TokenEntry(spiffe_id, frozenset(dns_names))

    def lookup(self, token: str) -> _TokenEntry | None:
        return self._by_digest.get(_digest(token))

    def __len__(self) -> int:
        return len(self._by_digest)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BootstrapTokens:
        """Load a tokens file; :class:`SecurityError` naming ``file:line`` on a bad line."""
        tokens = cls()
        for where, parts in table_lines(path, "tokens file", MAX_TOKENS_FILE_BYTES):
            if len(parts) < 2:
                raise SecurityError(f"{where}: expected '<spiffe-id> <token> [dns-name ...]'")
            try:
                tokens.add(parts[1], SpiffeId.parse(parts[0]), parts[2:])
            except (InvalidSpiffeId, ValueError) as exc:
                raise SecurityError(f"{where}: {exc}") from None
        return tokens


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass
class CaStats:
    """Counters for ``/status``."""

    issued: int = 0
    refused: int = 0
    recent_refusals: list[dict[str, str]] = field(default_factory=list)


class CertificateAuthorityService:
    """The ``IstioCertificateService`` servicer over a :class:`MeshCA`.

    Example::

        service = CertificateAuthorityService(ca, tokens=BootstrapTokens.from_file("tokens.txt"))
        service.add_to_server(grpc_aio_server)          # next to ADS, on a TLS port

    ``accept_certificates`` enables renewal by mTLS peers (mode 2 of the module docstring).
    """

    def __init__(
        self,
        ca: MeshCA,
        *,
        tokens: BootstrapTokens | None = None,
        accept_certificates: bool = True,
        default_ttl: timedelta = DEFAULT_SVID_TTL,
        max_ttl: timedelta = DEFAULT_MAX_TTL,
    ) -> None:
        if default_ttl > max_ttl:
            raise ValueError("default_ttl must not exceed max_ttl")
        self.ca = ca
        self.tokens = tokens if tokens is not None else BootstrapTokens()
        self.accept_certificates = accept_certificates
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.stats = CaStats()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register ``CreateCertificate`` on a ``grpc.aio`` server."""
        handler = grpc.unary_unary_rpc_method_handler(
            self.CreateCertificate,
            request_deserializer=IstioCertificateRequest.FromString,
            response_serializer=IstioCertificateResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {METHOD_NAME: handler}),))

    async def CreateCertificate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The RPC: authenticate, then :meth:`issue`; refusals become gRPC errors."""
        peer = context.peer()
        try:
            metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
            caller = self.authenticate(metadata, context.auth_context())
            chain = self.issue(caller, request.csr.encode(), request.validity_duration, request)
        except Refused as exc:
            self.record_refusal(peer, str(exc))
            await context.abort(exc.code, str(exc))
            raise  # unreachable: abort raises
        return IstioCertificateResponse(cert_chain=chain)

    # --- decisions (no gRPC objects; unit-testable) ------------------------------------------------------

    def authenticate(self, metadata: Mapping[str, str], auth_context: Mapping[str, Sequence[bytes]]) -> Caller:
        """Who is calling? Raises :class:`Refused` (UNAUTHENTICATED) when nobody proved anything."""
        authorization = metadata.get("authorization", "")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Refused(grpc.StatusCode.UNAUTHENTICATED, "authorization metadata must be 'Bearer <token>'")
            if not _is_tls(auth_context):
                raise Refused(grpc.StatusCode.UNAUTHENTICATED, "bootstrap tokens are only accepted over TLS")
            entry = self.tokens.lookup(token.strip())
            if entry is None:
                raise Refused(grpc.StatusCode.UNAUTHENTICATED, "unknown bootstrap token")
            return Caller(entry.spiffe_id, "token", entry.dns_names)
        pem = _first(auth_context, "x509_pem_cert")
        if pem is not None and self.accept_certificates:
            # The TLS layer verified the peer already; verify again here for the SPIFFE leaf rules and the
            # trust domain. grpcio hands over the leaf only, so this CA's own intermediates complete the path.
            try:
                chain = [*load_pem_certificates(pem, "client certificate")[:1], *self.ca.chain[:-1]]
                spiffe_id = verify_svid(chain, [self.ca.root], trust_domain=self.ca.trust_domain)
            except SecurityError as exc:
                raise Refused(grpc.StatusCode.UNAUTHENTICATED, f"client certificate not accepted: {exc}") from None
            return Caller(spiffe_id, "certificate", _dns_names_of(pem))
        raise Refused(
            grpc.StatusCode.UNAUTHENTICATED,
            "no credentials: send 'authorization: Bearer <bootstrap token>' or connect with your current SVID (mTLS)",
        )

    def issue(self, caller: Caller, csr_pem: bytes, validity_duration_s: int, request: Any = None) -> list[str]:
        """Sign ``csr_pem`` for ``caller``; return the PEM chain leaf first, root last."""
        if request is not None and request.HasField("metadata") and "ImpersonatedIdentity" in request.metadata.fields:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, "impersonation (ImpersonatedIdentity) is not supported")
        if validity_duration_s < 0:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "validity_duration must not be negative")
        ttl = timedelta(seconds=validity_duration_s) if validity_duration_s else self.default_ttl
        if ttl > self.max_ttl:
            asked, limit = int(ttl.total_seconds()), int(self.max_ttl.total_seconds())
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"requested lifetime {asked}s exceeds the maximum {limit}s")
        try:
            chain = self.ca.sign_csr(
                csr_pem, caller.spiffe_id, ttl=ttl, allowed_dns_names=caller.dns_names.__contains__
            )
        except IssuanceRefused as exc:
            # "CSR asks for <another identity / a DNS name>" is a permission problem; the rest is a bad CSR.
            code = grpc.StatusCode.PERMISSION_DENIED if "asks for" in str(exc) else grpc.StatusCode.INVALID_ARGUMENT
            raise Refused(code, str(exc)) from None
        self.stats.issued += 1
        _log.info(
            "issued %s (authenticated by %s) until %s", caller.spiffe_id, caller.method, chain[0].not_valid_after_utc
        )
        return [certs_pem([cert]).decode() for cert in chain]

    def record_refusal(self, peer: str, reason: str) -> None:
        """Count, log and remember a refusal (also used by the Unix-socket transport)."""
        self.stats.refused += 1
        _log.warning("CA refused a certificate to %s: %s", peer, reason)
        self.stats.recent_refusals.append({"peer": peer, "reason": reason})
        del self.stats.recent_refusals[:-MAX_RECENT_REFUSALS]

    def status(self) -> dict[str, Any]:
        """JSON-ready counters for the control plane's ``/status``."""
        return {
            "ca": {
                "trust_domain": self.ca.trust_domain,
                "issued": self.stats.issued,
                "refused": self.stats.refused,
                "recent_refusals": list(self.stats.recent_refusals),
                "bootstrap_tokens": len(self.tokens),
                "accept_certificates": self.accept_certificates,
            }
        }


def _first(auth_context: Mapping[str, Sequence[bytes]], key: str) -> bytes | None:
    values = auth_context.get(key) or ()
    return values[0] if values else None


def _is_tls(auth_context: Mapping[str, Sequence[bytes]]) -> bool:
    return _first(auth_context, "transport_security_type") in (b"ssl", b"tls")


def _dns_names_of(pem: bytes) -> frozenset[str]:
    from cryptography import x509

    leaf = x509.load_pem_x509_certificate(pem)
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    spiffe_id_of(leaf)  # already verified; raises only on a malformed SVID
    return frozenset(san.get_values_for_type(x509.DNSName))
