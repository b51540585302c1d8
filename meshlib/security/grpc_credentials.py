"""grpcio credentials from a :class:`CertificateSource`, following its rotations.

- :func:`rotating_server_credentials` — ``grpc.dynamic_ssl_server_credentials`` whose fetcher hands
  grpc the source's newest bundle: new handshakes use the new certificate, no restart.
- :func:`channel_credentials` — ``grpc.ssl_channel_credentials`` for one bundle (client cert + roots).
- :func:`peer_identity` — the SPIFFE ID grpc verified for the peer of a call (from ``auth_context``).

grpcio checks only DNS/IP SANs of a *server* certificate against the target name, so a
server SVID needs a DNS or IP SAN too (``MeshCA.issue(..., dns_names=..., ip_addresses=...)``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

import grpc

from meshlib.security.bundle import CertBundle, CertificateSource
from meshlib.security.errors import InvalidSpiffeId
from meshlib.security.spiffe import SpiffeId


def _configuration(bundle: CertBundle, client_ca_pem: bytes | None) -> object:
    return grpc.ssl_server_certificate_configuration(
        [(bundle.private_key_pem, bundle.cert_chain_pem)],
        root_certificates=client_ca_pem if client_ca_pem is not None else bundle.trust_bundle_pem,
    )


class _RotatingConfiguration:
    """Holds the pending configuration; grpc's fetcher (a core thread) takes it at most once."""

    def __init__(self, source: CertificateSource, client_ca_pem: bytes | None) -> None:
        self._lock = threading.Lock()
        self._pending: object | None = None
        self._client_ca_pem = client_ca_pem
        self.initial = _configuration(source.current(), client_ca_pem)
        self.unsubscribe = source.subscribe(self._rotated)

    def _rotated(self, bundle: CertBundle) -> None:
        config = _configuration(bundle, self._client_ca_pem)
        with self._lock:
            self._pending = config

    def fetch(self) -> object | None:
        with self._lock:
            config, self._pending = self._pending, None
        return config


def rotating_server_credentials(
    source: CertificateSource,
    *,
    require_client_auth: bool,
    client_ca_pem: bytes | None = None,
    unsubscribers: list[Callable[[], None]] | None = None,
) -> grpc.ServerCredentials:
    """TLS server credentials that follow ``source``'s rotations (the source must have a bundle).

    ``require_client_auth=True`` makes it mTLS: clients must present a certificate that
    ``client_ca_pem`` (default: the bundle's trust bundle) verifies. With ``False`` grpcio does
    not ask for a client certificate at all. The function that stops following ``source`` is
    appended to ``unsubscribers`` (call it when the server stops).
    """
    holder = _RotatingConfiguration(source, client_ca_pem)
    if unsubscribers is not None:
        unsubscribers.append(holder.unsubscribe)
    return grpc.dynamic_ssl_server_credentials(
        holder.initial, holder.fetch, require_client_authentication=require_client_auth
    )


def channel_credentials(
    bundle: CertBundle | None, *, root_certificates: bytes | None = None
) -> grpc.ChannelCredentials:
    """Client TLS credentials: verify the server with ``root_certificates`` (default the bundle's
    trust bundle) and present ``bundle``'s certificate when given."""
    roots = root_certificates if root_certificates is not None else (bundle.trust_bundle_pem if bundle else None)
    if bundle is None:
        return grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=bundle.private_key_pem, certificate_chain=bundle.cert_chain_pem
    )


def peer_identity(auth_context: Mapping[str, Sequence[bytes]]) -> SpiffeId | None:
    """The peer's SPIFFE ID from a call's ``auth_context()`` (verified by the TLS handshake), or None.

    None when the call is not over TLS, the peer sent no certificate, or its certificate does
    not carry exactly one valid ``spiffe://`` URI SAN.
    """
    if (auth_context.get("transport_security_type") or [b""])[0] not in (b"ssl", b"tls"):  # grpcio names vary
        return None
    uris = list(auth_context.get("peer_uri") or ())
    if not uris:  # older grpcio: only the SAN list
        uris = [v for v in auth_context.get("x509_subject_alternative_name") or () if v.startswith(b"spiffe://")]
    if len(uris) != 1:
        return None
    try:
        return SpiffeId.parse(uris[0].decode("utf-8", "replace"))
    except InvalidSpiffeId:
        return None
