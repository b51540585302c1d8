"""The server side of mesh TLS: SSL contexts from the workload SVID, decided by PeerAuthentication.

``mesh.server_ssl_context(port)`` gives an ``ssl.SSLContext`` that presents
the workload's SVID and verifies client certificates against its trust
bundle: **required** when PeerAuthentication says ``STRICT`` for that port,
**optional** otherwise (``PERMISSIVE`` accepts mTLS and TLS without a client
certificate; plaintext is the server's choice of listener). Serve it::

    mesh.use_certificates(source)
    web.run_app(app, port=9080, ssl_context=mesh.server_ssl_context(9080))

Rotation without a restart: a server keeps the context object it was given,
so the context's ``sni_callback`` (which OpenSSL calls for every ClientHello,
with or without SNI) switches each new connection to the context built from
the *current* certificate and trust bundle. A certificate or CA rotated away
is refused by the next handshake; established connections keep theirs, as in
Envoy.

Whether a context requires a client certificate is fixed when it is created
(OpenSSL keeps the first context's verify mode through the switch): a later
change to ``STRICT`` is enforced by the server middleware, which refuses
requests without a client certificate; relaxing ``STRICT`` needs a new
context (restart the listener).

PeerAuthentication ``STRICT`` also refuses plaintext requests that reach
``mesh.server_middleware()`` (an app may listen on plaintext and TLS ports):
they get ``403`` with ``Connection: close`` and the reason, counted as
``tls_inspector.plaintext_refused``. Envoy closes such connections during
the handshake instead; in-process the request has already been parsed when
the middleware sees it (docs/differences.md).
"""

from __future__ import annotations

import ssl
import weakref
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from meshlib.config.model import MeshSnapshot
from meshlib.config.peer_authentication import DEFAULT_ROOT_NAMESPACE, InboundMtls, resolve_inbound_mtls
from meshlib.errors import MeshError
from meshlib.security.bundle import CertBundle, CertificateSource
from meshlib.security.tls_contexts import server_context

if TYPE_CHECKING:
    from meshlib.mesh import Mesh

PERMISSIVE = InboundMtls()
_BY_MESH: weakref.WeakKeyDictionary[Any, InboundTls] = weakref.WeakKeyDictionary()


class ServerTlsUnavailable(MeshError):
    """A server SSL context was asked for but the mesh has no workload certificate."""


def inbound_mtls_of(snapshot: MeshSnapshot, root_namespace: str = DEFAULT_ROOT_NAMESPACE) -> InboundMtls | None:
    """The workload's resolved PeerAuthentication, or None when no policy applies (PERMISSIVE, nothing to enforce)."""
    policies = snapshot.security.peer_authentication
    if not policies:
        return None
    workload = snapshot.workload
    resolved = resolve_inbound_mtls(policies, workload.namespace, workload.labels, root_namespace)
    return resolved if resolved.policies else None


class InboundTls:
    """Server-side TLS state of one mesh (one per mesh: :meth:`of`)."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = weakref.ref(mesh)
        self._contexts: dict[bool, ssl.SSLContext] = {}  # require client cert? → context from the current bundle
        self._unsubscribe: Callable[[], None] | None = None
        self._source: CertificateSource | None = None
        self.counters: Counter[str] = Counter()

    @classmethod
    def of(cls, mesh: Mesh) -> InboundTls:
        inbound = _BY_MESH.get(mesh)
        if inbound is None:
            inbound = _BY_MESH[mesh] = cls(mesh)
        return inbound

    def mtls(self) -> InboundMtls:
        """The PeerAuthentication in force for this workload now (PERMISSIVE when none applies)."""
        mesh = self._mesh()
        if mesh is None:
            return PERMISSIVE
        return inbound_mtls_of(mesh.snapshot) or PERMISSIVE

    def ssl_context(self, port: int | None = None) -> ssl.SSLContext:
        """A server context for ``port`` (client certificate required when STRICT there), following rotation."""
        require = self.mtls().mode_for(port) == "STRICT"
        # A context of its own, never swapped itself: its callback moves each handshake to the current one.
        front = self._build(self._bundle(), require)
        front.sni_callback = self._switch(require)
        return front

    def grpc_server_credentials(self, port: int | None = None) -> Any:
        """``grpc.ServerCredentials`` presenting the workload SVID, client certificates required when STRICT.

        Built with ``grpc.dynamic_ssl_server_credentials``: grpcio asks for the
        current certificate on each new handshake, so rotation needs no restart.
        Plaintext clients and (under STRICT) clients without a certificate fail
        the handshake, as with Envoy::

            server.add_secure_port("127.0.0.1:50051", mesh.inbound_tls().grpc_server_credentials(50051))

        Handlers read the caller with :func:`meshlib.security.peer.grpc_peer_identity`.
        """
        import grpc

        require = self.mtls().mode_for(port) == "STRICT"
        first = self._bundle()
        served: list[CertBundle] = [first]

        def configuration(bundle: CertBundle) -> Any:
            return grpc.ssl_server_certificate_configuration(
                [(bundle.private_key_pem, bundle.cert_chain_pem)], root_certificates=bundle.trust_bundle_pem
            )

        def fetch() -> Any:
            # Called by grpcio on its own threads before each handshake: None keeps the current one.
            current = self._bundle()
            if current is served[0]:
                return None
            served[0] = current
            return configuration(current)

        return grpc.dynamic_ssl_server_credentials(configuration(first), fetch, require_client_authentication=require)

    def _switch(self, require: bool) -> Callable[[ssl.SSLObject, str | None, ssl.SSLContext], None]:
        def switch_to_current(ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
            current = self._current(require)
            if current is not context:
                ssl_object.context = current

        return switch_to_current

    def _current(self, require: bool) -> ssl.SSLContext:
        context = self._contexts.get(require)
        if context is None:
            context = self._contexts[require] = self._build(self._bundle(), require)
        return context

    def _bundle(self) -> CertBundle:
        mesh = self._mesh()
        source = mesh.certificates if mesh is not None else None
        if source is None:
            raise ServerTlsUnavailable("no workload certificate: call mesh.use_certificates(source) first")
        if source is not self._source:
            if self._unsubscribe is not None:
                self._unsubscribe()
            self._unsubscribe = source.subscribe(self._rotated)
            self._source = source
            self._contexts = {}
        return source.current()

    def _rotated(self, bundle: CertBundle) -> None:
        self._contexts = {}  # rebuilt from the new bundle at the next handshake
        self.counters["rotations"] += 1

    @staticmethod
    def _build(bundle: CertBundle, require: bool) -> ssl.SSLContext:
        return server_context(
            bundle.cert_chain_pem, bundle.private_key_pem, bundle.trust_bundle_pem, require_client_certificate=require
        )
