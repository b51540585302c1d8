"""The peer's identity on the inbound side, and PeerAuthentication STRICT enforcement.

Handlers read who called them::

    from meshlib import peer_identity

    async def handler(request: web.Request) -> web.Response:
        caller = peer_identity(request)          # SpiffeId | None (None: plaintext or no client cert)
        if caller is None or caller.service_account != "productpage":
            raise web.HTTPForbidden()

and gRPC servicers likewise with :func:`grpc_peer_identity` (``context``).
The identity is taken from a certificate the TLS layer already verified
against the mesh trust bundle (``mesh.server_ssl_context()``), and only when
it carries exactly one ``spiffe://`` URI SAN. It is read once per connection.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from meshlib.config.peer_authentication import InboundMtls
from meshlib.security.spiffe import SpiffeId
from meshlib.security.tls_contexts import peer_spiffe_id

if TYPE_CHECKING:
    from aiohttp import web

_NOT_TLS = object()
_BY_TRANSPORT: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_CONNECTIONS: weakref.WeakKeyDictionary[Any, tuple[int | None, str | None]] = weakref.WeakKeyDictionary()
PLAINTEXT_REFUSED = "tls_inspector.plaintext_refused"
NO_CLIENT_CERT_REFUSED = "ssl.no_certificate_refused"


def peer_identity(request: web.BaseRequest) -> SpiffeId | None:
    """The verified SPIFFE ID of the client of ``request`` (aiohttp server), or None."""
    transport = request.transport
    if transport is None:
        return None
    cached = _BY_TRANSPORT.get(transport)
    if cached is None:
        ssl_object = transport.get_extra_info("ssl_object")
        cached = _NOT_TLS if ssl_object is None else peer_spiffe_id(ssl_object.getpeercert())
        if cached is None:
            cached = _NOT_TLS
        _BY_TRANSPORT[transport] = cached
    return cached if isinstance(cached, SpiffeId) else None


def grpc_peer_identity(context: Any) -> SpiffeId | None:
    """The verified SPIFFE ID of a ``grpc`` / ``grpc.aio`` server call's peer, or None.

    Read from the call's auth context (``x509_subject_alternative_name`` holds
    every SAN; the SPIFFE ID is the one ``spiffe://`` URI among them)::

        async def Get(self, request, context):
            caller = grpc_peer_identity(context)        # SpiffeId('cluster.local', '/ns/default/sa/web')
            if caller is None or caller.namespace != "default":
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "who are you?")
    """
    auth = context.auth_context() or {}
    if auth.get("transport_security_type", [b""])[0] not in (b"ssl", b"tls"):  # "tls" from grpcio 1.6x on
        return None
    uris = [v.decode() for v in auth.get("x509_subject_alternative_name", []) if v.lower().startswith(b"spiffe://")]
    if len(uris) != 1:
        return None
    try:
        return SpiffeId.parse(uris[0])
    except ValueError:
        return None


def strict_refusal(mtls: InboundMtls, request: web.BaseRequest) -> str | None:
    """Why PeerAuthentication refuses ``request`` (plaintext or no client certificate on a STRICT port), or None."""
    transport = request.transport
    if transport is None:
        return None
    seen = _CONNECTIONS.get(transport)  # (local port, what a STRICT port would refuse): fixed per connection
    if seen is None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            refusal: str | None = PLAINTEXT_REFUSED
        else:
            refusal = None if ssl_object.getpeercert() else NO_CLIENT_CERT_REFUSED
        seen = _CONNECTIONS[transport] = (_local_port(transport), refusal)
    port, refusal = seen
    if refusal is None or mtls.mode_for(port) != "STRICT":
        return None
    return refusal


def grpc_strict_refusal(mtls: InboundMtls, context: Any, port: int | None) -> str | None:
    """Why PeerAuthentication refuses a gRPC call (plaintext or no client certificate on a STRICT port), or None."""
    if mtls.mode_for(port) != "STRICT":
        return None
    auth = context.auth_context() or {}
    if auth.get("transport_security_type", [b""])[0] not in (b"ssl", b"tls"):
        return PLAINTEXT_REFUSED
    if not auth.get("x509_pem_cert"):
        return NO_CLIENT_CERT_REFUSED
    return None


def refusal_text(refusal: str) -> str:
    """The message a refused call or request carries."""
    why = "plaintext" if refusal == PLAINTEXT_REFUSED else "TLS without a client certificate"
    return f"meshlib: {why} refused: PeerAuthentication STRICT requires mutual TLS on this port"


def _local_port(transport: Any) -> int | None:
    sockname = transport.get_extra_info("sockname")
    if isinstance(sockname, tuple) and len(sockname) >= 2 and isinstance(sockname[1], int):
        return sockname[1]
    return None


def refused_response(mesh: Any, refusal: str) -> web.Response:
    """The answer to a request PeerAuthentication STRICT refuses (counted on the mesh's inbound TLS stats)."""
    from aiohttp import web

    from meshlib.security.tls_server import InboundTls

    InboundTls.of(mesh).counters[refusal] += 1
    return web.Response(
        status=403,
        text=refusal_text(refusal) + "\n",
        headers={"connection": "close", "x-meshlib-local-reply": "mTLS"},
    )
