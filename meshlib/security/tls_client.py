"""DestinationRule ``tls`` executed on the client side: one ``ssl.SSLContext`` per cluster setting.

For each cluster whose policy has TLS, :meth:`UpstreamTlsContexts.for_cluster`
returns an :class:`UpstreamTls` — the context, the SNI to send and the peer
identities to accept — built once and cached until the configuration or the
workload certificate changes (the :class:`CertificateSource` subscription
clears the cache on rotation; new connections then present the new SVID) or,
for file-based settings, the files change on disk (looked at every
``recheck_files_s``, 5 s; files that do not load keep the previous context).

Per mode, as a sidecar would do it:

- ``SIMPLE``: verify the server against ``caCertificates`` (system roots when
  unset) and, with ``caCrl``, its revocation list; ``subjectAltNames`` are
  checked after the handshake; without them the host name (``sni``, else the
  host the application called) is checked by ``ssl`` itself.
  ``insecureSkipVerify`` verifies nothing.
- ``MUTUAL``: the same plus the ``clientCertificate``/``privateKey`` files.
- ``ISTIO_MUTUAL``: the workload's SVID from ``mesh.use_certificates(source)``
  and its trust bundle; the peer's SPIFFE ID must be one of
  ``subjectAltNames`` (the destination's service accounts) or, when none are
  known, belong to the workload's own trust domain. SNI is Istio's
  ``outbound_.<port>_.<subset>_.<host>``; ALPN offers ``istio``.

Mesh-managed gRPC channels get ``grpc.ssl_channel_credentials`` per cluster
(:meth:`UpstreamTlsContexts.for_grpc_cluster`): grpcio verifies the chain
and a DNS SAN, not the SPIFFE URI SAN (see :class:`GrpcTls`).

Without certificates, ISTIO_MUTUAL raises :class:`TlsUnavailable`: the
request gets a local 503 saying why, never a plaintext connection.
"""

from __future__ import annotations

import itertools
import logging
import os
import ssl
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from meshlib.config.model import ClientTls, Cluster
from meshlib.errors import MeshError
from meshlib.security.bundle import MAX_PEM_BYTES, CertBundle, CertificateSource
from meshlib.security.errors import SecurityError
from meshlib.security.tls_contexts import ISTIO_ALPN, PeerExpectation, client_context

MAX_CACHED = 4096  # cluster settings; bounded like every cache on the request path
T = TypeVar("T")
_BUILDS = itertools.count(1)  # every gRPC credentials build gets its own channels
log = logging.getLogger("meshlib.tls")


class TlsUnavailable(MeshError):
    """A cluster's TLS setting cannot be honoured (no workload certificate, unreadable files)."""


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """What dialling one cluster over TLS needs."""

    context: ssl.SSLContext
    server_hostname: str | None  # None: the host the application called
    expectation: PeerExpectation | None  # checked after the handshake; None: ssl checked the host name


class FileStamps:
    """What the files of a file-based setting looked like when its context was built (Kubernetes secret
    mounts swap a symlink: ``stat`` follows it, so a swap changes the inode)."""

    __slots__ = ("files", "next_check", "stamps")

    def __init__(self, files: tuple[str, ...], next_check: float) -> None:
        self.files = files
        self.next_check = next_check
        self.stamps = self._stat()

    @classmethod
    def of(cls, tls: ClientTls, next_check: float) -> FileStamps | None:
        files = tuple(f for f in (tls.ca_certificates, tls.client_certificate, tls.private_key, tls.ca_crl) if f)
        return cls(files, next_check) if files else None

    def changed(self) -> bool:
        return self._stat() != self.stamps

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        out = []
        for name in self.files:
            try:
                info = os.stat(name)
                out.append((info.st_ino, info.st_size, info.st_mtime_ns))
            except OSError:
                out.append((0, 0, 0))
        return tuple(out)


class UpstreamTlsContexts:
    """The per-cluster TLS contexts of one mesh, rebuilt on certificate rotation.

    ``certificates`` is read on every (re)build, so ``mesh.use_certificates``
    may be called at any time.
    """

    def __init__(
        self,
        certificates: Callable[[], CertificateSource | None],
        *,
        clock: Callable[[], float] = time.monotonic,
        recheck_files_s: float = 5.0,
    ) -> None:
        self._certificates = certificates
        self._cache: dict[str, tuple[ClientTls, UpstreamTls, FileStamps | None]] = {}
        self._grpc: dict[str, tuple[ClientTls, GrpcTls, FileStamps | None]] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._subscribed_to: CertificateSource | None = None
        self._clock = clock
        self._recheck_files_s = recheck_files_s
        self.generation = 0  # bumped on every rotation (tests and stats read it)

    def for_cluster(self, cluster: Cluster) -> UpstreamTls:
        """The cluster's TLS settings made executable; raises :class:`TlsUnavailable`."""
        tls = cluster.policy.tls
        cached = self._cache.get(cluster.name)
        if cached is not None and (cached[0] is tls or cached[0] == tls):
            stamps = cached[2]
            if stamps is None or not self._files_changed(cluster, stamps):
                return cached[1]
        return self._store(self._cache, cluster, tls, self._build)

    def for_grpc_cluster(self, cluster: Cluster) -> GrpcTls:
        """The cluster's TLS settings as gRPC channel credentials; raises :class:`TlsUnavailable`."""
        tls = cluster.policy.tls
        cached = self._grpc.get(cluster.name)
        if cached is not None and (cached[0] is tls or cached[0] == tls):
            stamps = cached[2]
            if stamps is None or not self._files_changed(cluster, stamps):
                return cached[1]
        return self._store(self._grpc, cluster, tls, self._build_grpc)

    def _store(
        self, cache: dict[str, tuple[ClientTls, T, FileStamps | None]], cluster: Cluster, tls: ClientTls,
        build: Callable[[Cluster, ClientTls], T],
    ) -> T:
        stamps = FileStamps.of(tls, self._clock() + self._recheck_files_s)
        try:
            built = build(cluster, tls)
        except TlsUnavailable:
            previous = cache.get(cluster.name)
            if previous is None or previous[0] != tls:
                raise
            # The files changed but do not load (yet): keep the context built from the previous ones.
            log.warning("cluster %s: new TLS files do not load; keeping the previous ones", cluster.name)
            return previous[1]
        if len(cache) >= MAX_CACHED:
            cache.clear()
        cache[cluster.name] = (tls, built, stamps)
        return built

    def _files_changed(self, cluster: Cluster, stamps: FileStamps) -> bool:
        """Whether the settings' files changed on disk (looked at once per ``recheck_files_s``)."""
        now = self._clock()
        if now < stamps.next_check:
            return False
        stamps.next_check = now + self._recheck_files_s
        return stamps.changed()

    def _build_grpc(self, cluster: Cluster, tls: ClientTls) -> GrpcTls:
        source = self._certificates()
        if tls.mode == "ISTIO_MUTUAL" and source is not None:
            self._follow(source)
        return grpc_tls(cluster, tls, source)

    def rotated(self, bundle: CertBundle | None = None) -> None:
        """Drop every context: the next connection of each cluster uses the current certificate."""
        self._cache = {}
        self._grpc = {}
        self.generation += 1

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
            self._subscribed_to = None

    def _build(self, cluster: Cluster, tls: ClientTls) -> UpstreamTls:
        names = frozenset(tls.subject_alt_names)
        try:
            if tls.mode == "ISTIO_MUTUAL":
                return self._istio_mutual(cluster, tls, names)
            context = client_context(
                ca_file=tls.ca_certificates,
                cert_file=tls.client_certificate,
                key_file=tls.private_key,
                crl_file=tls.ca_crl,
                check_hostname=not names,
                verify=not tls.insecure_skip_verify,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TlsUnavailable(f"cluster {cluster.name}: cannot load TLS files ({exc})") from None
        expectation = PeerExpectation(names) if names and not tls.insecure_skip_verify else None
        return UpstreamTls(context, tls.sni or None, expectation)

    def _istio_mutual(self, cluster: Cluster, tls: ClientTls, names: frozenset[str]) -> UpstreamTls:
        source = self._certificates()
        if source is None:
            raise TlsUnavailable(
                f"cluster {cluster.name} uses ISTIO_MUTUAL but this mesh has no workload certificate "
                "(call mesh.use_certificates(source))"
            )
        self._follow(source)
        try:
            bundle = source.current()
        except SecurityError as exc:
            raise TlsUnavailable(f"cluster {cluster.name} uses ISTIO_MUTUAL: {exc}") from None
        context = client_context(
            trust_pem=bundle.trust_bundle_pem,
            chain_pem=bundle.cert_chain_pem,
            key_pem=bundle.private_key_pem,
            check_hostname=False,  # SPIFFE IDs are URI SANs: checked after the handshake
            alpn=ISTIO_ALPN,
        )
        expectation = PeerExpectation(names, None if names else bundle.spiffe_id.trust_domain)
        return UpstreamTls(context, tls.sni or istio_sni(cluster), expectation)

    def _follow(self, source: CertificateSource) -> None:
        if self._subscribed_to is source:
            return
        self.close()
        self._unsubscribe = source.subscribe(self.rotated)
        self._subscribed_to = source


def istio_sni(cluster: Cluster) -> str:
    """istiod's SNI for in-mesh mTLS: ``outbound_.<port>_.<subset>_.<host>``."""
    return f"outbound_.{cluster.port}_.{cluster.subset}_.{cluster.service}"


@dataclass(frozen=True, slots=True)
class GrpcTls:
    """What a mesh-managed gRPC channel to one cluster needs: credentials and the name to verify.

    grpcio's ``ssl_channel_credentials`` verifies the chain and a DNS/IP SAN
    only — never a URI SAN (grpc/grpc#32635) — so the server must carry a DNS
    SAN (the service FQDN by default; ``sni`` or a DNS-form ``subjectAltNames``
    entry when set), and SVIDs for gRPC servers are issued with one.
    """

    credentials: Any  # grpc.ChannelCredentials
    target_name: str  # grpc.ssl_target_name_override
    family: str  # the setting (mode, name, files): channels of one family differ only by certificate generation
    key: str  # this generation (a rotation makes a new one; the pool retires the old channels)


def grpc_tls(cluster: Cluster, tls: ClientTls, certificates: CertificateSource | None) -> GrpcTls:
    """gRPC channel credentials for ``cluster``; raises :class:`TlsUnavailable` for settings grpcio cannot honour."""
    import grpc

    if tls.insecure_skip_verify:
        raise TlsUnavailable(f"cluster {cluster.name}: insecureSkipVerify is not supported on gRPC channels")
    if tls.ca_crl:
        raise TlsUnavailable(f"cluster {cluster.name}: caCrl is not supported on gRPC channels")
    dns_names = [name for name in tls.subject_alt_names if "://" not in name]
    uri_names = [name for name in tls.subject_alt_names if "://" in name]
    if uri_names and not dns_names and not tls.sni:
        # grpcio cannot check a URI SAN: verifying the FQDN instead would silently widen who is accepted.
        raise TlsUnavailable(
            f"cluster {cluster.name}: grpcio cannot verify URI subjectAltNames ({uri_names[0]}); "
            "add the service's DNS name to subjectAltNames"
        )
    target = tls.sni or (dns_names[0] if dns_names else cluster.service)
    try:
        if tls.mode == "ISTIO_MUTUAL":
            if certificates is None:
                raise TlsUnavailable(
                    f"cluster {cluster.name} uses ISTIO_MUTUAL but this mesh has no workload certificate "
                    "(call mesh.use_certificates(source))"
                )
            try:
                bundle = certificates.current()
            except SecurityError as exc:
                raise TlsUnavailable(f"cluster {cluster.name} uses ISTIO_MUTUAL: {exc}") from None
            credentials = grpc.ssl_channel_credentials(
                bundle.trust_bundle_pem, bundle.private_key_pem, bundle.cert_chain_pem
            )
            family = f"istio:{target}"
        else:
            root = _read_pem(tls.ca_certificates) if tls.ca_certificates else None
            chain = _read_pem(tls.client_certificate) if tls.client_certificate else None
            private = _read_pem(tls.private_key) if tls.private_key else None
            credentials = grpc.ssl_channel_credentials(root, private, chain)
            family = f"{tls.mode}:{target}:{tls.ca_certificates}:{tls.client_certificate}"
    except OSError as exc:
        raise TlsUnavailable(f"cluster {cluster.name}: cannot load TLS files ({exc})") from None
    return GrpcTls(credentials, target, family, str(next(_BUILDS)))


def _read_pem(path: str) -> bytes:
    """A PEM file for grpcio: a regular file of at most 1 MiB (``OSError`` otherwise)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(f"{path} is not a regular file")
    with open(path, "rb") as file:
        data = file.read(MAX_PEM_BYTES + 1)
    if len(data) > MAX_PEM_BYTES:
        raise OSError(f"{path} is larger than {MAX_PEM_BYTES} bytes")
    return data
