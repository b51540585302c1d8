"""``ssl.SSLContext`` construction from PEM bytes or files, and the post-handshake peer check.

Python's ``ssl`` has no verification callback (python/cpython#86492), so a
SPIFFE identity cannot be checked during the handshake: contexts verify the
chain (``CERT_REQUIRED``) with ``check_hostname`` off whenever an identity
other than the host name is expected, and :class:`PeerExpectation` checks the
peer certificate's SANs right after the handshake, before any request byte
(the aiohttp connector and the gRPC server interceptor call it).

Example::

    ctx = client_context_from_pem(bundle.cert_chain_pem, bundle.private_key_pem, bundle.trust_bundle_pem)
    expectation = PeerExpectation(names=frozenset({"spiffe://cluster.local/ns/default/sa/reviews"}))
    reason = expectation.failure(ssl_object.getpeercert())   # None when acceptable
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from meshlib.security.spiffe import SpiffeId

# ALPN an Istio sidecar offers on in-mesh mTLS (istio/istio ALPNInMeshWithMxc); plus HTTP/1.1 for meshlib peers.
ISTIO_ALPN = ("istio-peer-exchange", "istio", "http/1.1")


@contextlib.contextmanager
def _private_files(*contents: bytes) -> Iterator[list[str]]:
    """Write ``contents`` to files only this process can read; delete them afterwards.

    ``SSLContext.load_cert_chain`` takes file names only.
    """
    directory = tempfile.mkdtemp(prefix="meshlib-tls-")
    paths: list[str] = []
    try:
        for index, data in enumerate(contents):
            path = os.path.join(directory, f"{index}.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            paths.append(path)
        yield paths
    finally:
        for path in paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(directory)


def load_identity_pem(context: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    """Load a certificate chain and its key (PEM bytes) into ``context``."""
    with _private_files(chain_pem, key_pem) as (chain_file, key_file):
        context.load_cert_chain(chain_file, key_file)


def client_context(
    *,
    trust_pem: bytes | None = None,
    ca_file: str = "",
    chain_pem: bytes | None = None,
    key_pem: bytes | None = None,
    cert_file: str = "",
    key_file: str = "",
    crl_file: str = "",
    check_hostname: bool = True,
    verify: bool = True,
    alpn: tuple[str, ...] = ("http/1.1",),
) -> ssl.SSLContext:
    """A client context: trust from PEM bytes and/or a CA file (system roots when neither), optional identity."""
    # Without a CA file or PEM, create_default_context loads the system roots itself.
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file or None,
                                         cadata=trust_pem.decode() if trust_pem else None)
    if crl_file:
        context.load_verify_locations(cafile=crl_file)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = check_hostname
        context.verify_mode = ssl.CERT_REQUIRED
    if chain_pem is not None and key_pem is not None:
        load_identity_pem(context, chain_pem, key_pem)
    elif cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def server_context(
    chain_pem: bytes, key_pem: bytes, trust_pem: bytes, *, require_client_certificate: bool
) -> ssl.SSLContext:
    """A server context presenting the workload SVID; client certificates required or optional."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=trust_pem.decode())
    context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
    load_identity_pem(context, chain_pem, key_pem)
    context.set_alpn_protocols(["http/1.1"])
    return context


def peer_sans(peercert: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """``(type, value)`` subjectAltNames of a ``getpeercert()`` dict (``URI``, ``DNS``, ``IP Address``)."""
    if not peercert:
        return []
    sans = peercert.get("subjectAltName") or ()
    return [(str(kind), str(value)) for kind, value in sans]


def peer_spiffe_id(peercert: Mapping[str, Any] | None) -> SpiffeId | None:
    """The SPIFFE ID of a verified peer certificate (exactly one ``spiffe://`` URI SAN), else None."""
    uris = [value for kind, value in peer_sans(peercert) if kind == "URI"]
    if len(uris) != 1 or not uris[0].lower().startswith("spiffe://"):
        return None
    try:
        return SpiffeId.parse(uris[0])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class PeerExpectation:
    """Which peer identities are acceptable, checked after the handshake.

    ``names``: acceptable SAN values (a ``spiffe://`` URI or a DNS name; any
    one match accepts). ``trust_domain``: when ``names`` is empty, the peer's
    SPIFFE ID must belong to this trust domain (ISTIO_MUTUAL towards a service
    whose accounts are unknown, as istiod does without a service-account list).
    """

    names: frozenset[str] = frozenset()
    trust_domain: str | None = None

    def failure(self, peercert: Mapping[str, Any] | None) -> str | None:
        """None when the peer is acceptable, else why not (for the local reply and logs)."""
        sans = peer_sans(peercert)
        if not sans:
            return "peer presented no certificate subjectAltName"
        if self.names:
            if any(value in self.names for kind, value in sans if kind in ("URI", "DNS", "IP Address")):
                return None
            shown = ", ".join(sorted(self.names)[:3])
            presented = ", ".join(value for _, value in sans[:3])
            return f"peer identity {presented} does not match the expected subjectAltNames ({shown})"
        if self.trust_domain is not None:
            spiffe_id = peer_spiffe_id(peercert)
            if spiffe_id is None:
                return "peer certificate carries no SPIFFE ID"
            if not spiffe_id.member_of(self.trust_domain):
                return f"peer {spiffe_id} is not in trust domain {self.trust_domain!r}"
        return None
