"""The connector behind ``mesh.session()``: applies each cluster's connect timeout.

aiohttp takes the socket-connect timeout from the session's ``ClientTimeout``,
out of a middleware's reach. DestinationRule ``tcp.connectTimeout`` (Istio
default 10 s) is per cluster, so the client middleware records the picked
cluster's value on the request it dials (:func:`set_connect_timeout`) and this
connector caps ``sock_connect`` with it when it opens a new connection.
Pooled connections cost nothing here.

For clusters with DestinationRule ``tls`` it also counts TLS failures
(``ssl.connection_error``, ``ssl.fail_verify_san``) and checks the peer's
identity right after the handshake, before any request byte
(:func:`set_peer_check`).

Sessions you build yourself get the same behaviour with
``aiohttp.ClientSession(connector=mesh.connector(), middlewares=(mesh.middleware(),))``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import attr
from aiohttp import (
    ClientConnectorCertificateError,
    ClientConnectorError,
    ClientConnectorSSLError,
    ClientRequest,
    ClientTimeout,
    TCPConnector,
)
from aiohttp.client_proto import ResponseHandler

from meshlib.aiohttp.total_timeout import SESSION_CONNECT_TIMEOUT, SESSION_TIMEOUT

if TYPE_CHECKING:
    from meshlib.security.tls_contexts import PeerExpectation

# The request attribute holding the connect timeout (seconds) of the cluster the attempt dials.
_CONNECT_TIMEOUT = "_meshlib_connect_timeout_s"
# Set only for clusters with DestinationRule tls: (peer expectation or None, the cluster's counters).
_PEER_CHECK = "_meshlib_peer_check"
# Why the last TLS connection attempt of the request failed (Envoy's upstream_transport_failure_reason).
_TLS_FAILURE = "_meshlib_tls_failure"


class PeerIdentityRejected(ClientConnectorError):
    """The TLS handshake succeeded but the peer's certificate is not an identity this cluster accepts."""


def set_peer_check(req: ClientRequest, expectation: PeerExpectation | None, counters: dict[str, int]) -> None:
    """Have new connections of ``req`` count TLS failures and check the peer identity after the handshake."""
    setattr(req, _PEER_CHECK, (expectation, counters))


def tls_failure(req: ClientRequest) -> str | None:
    """Why the TLS connection of ``req`` failed, or None."""
    reason: str | None = getattr(req, _TLS_FAILURE, None)
    return reason


def set_connect_timeout(req: ClientRequest, timeout_s: float) -> None:
    """Record on ``req`` the connect timeout of the cluster it is about to dial."""
    # setattr, not vars(): reading __dict__ makes CPython materialise one per request.
    setattr(req, _CONNECT_TIMEOUT, timeout_s)


class MeshConnector(TCPConnector):
    """A ``TCPConnector`` that honours the per-cluster connect timeout set by the mesh middleware."""

    # aiohttp's own signature, as a plain method handing back the base class's coroutine. aiohttp
    # calls it only to open a new connection (a pooled one never gets here), so the cap costs
    # nothing on requests that reuse a connection.
    def _create_connection(
        self,
        req: ClientRequest,
        traces: list[Any],
        timeout: ClientTimeout,
    ) -> Coroutine[Any, Any, ResponseHandler]:
        if timeout is SESSION_TIMEOUT:  # mesh.session()'s default: aiohttp bounds the TLS handshake by the total
            timeout = SESSION_CONNECT_TIMEOUT
        limit: float | None = getattr(req, _CONNECT_TIMEOUT, None)
        if limit is not None and (timeout.sock_connect is None or limit < timeout.sock_connect):
            timeout = _capped_timeout(timeout, limit)
        return super()._create_connection(req, traces, timeout)

    def _wrap_create_connection(
        self, *args: Any, req: ClientRequest, **kwargs: Any
    ) -> Coroutine[Any, Any, tuple[asyncio.Transport, ResponseHandler]]:
        # aiohttp's private hook between the TCP/TLS handshake and the first request byte (the only
        # place to check a SPIFFE identity: Python's ssl has no verify callback). New connections only.
        check = getattr(req, _PEER_CHECK, None)
        if check is None:
            return super()._wrap_create_connection(*args, req=req, **kwargs)
        return _checked_connection(self, check, args, req, kwargs)


def _capped_timeout(timeout: ClientTimeout, limit: float) -> ClientTimeout:
    """``timeout`` with ``sock_connect`` capped at ``limit``, built once per pair (both are immutable)."""
    key = (timeout, limit)
    result = _CAPPED.get(key)
    if result is None:
        if len(_CAPPED) >= 64:  # per-request timeouts may vary: stay bounded
            _CAPPED.clear()
        result = _CAPPED[key] = attr.evolve(timeout, sock_connect=limit)
    return result


# ``attr.evolve`` costs ~8 µs; a session has one timeout and a mesh a handful of connect timeouts.
_CAPPED: dict[tuple[ClientTimeout, float], ClientTimeout] = {}


async def _checked_connection(
    connector: MeshConnector, check: tuple[PeerExpectation | None, dict[str, int]], args: tuple[Any, ...],
    req: ClientRequest, kwargs: dict[str, Any],
) -> tuple[asyncio.Transport, ResponseHandler]:
    expectation, counters = check
    setattr(req, _TLS_FAILURE, None)  # the reason of this connection attempt only (an earlier one may have failed)
    try:
        transport, protocol = await TCPConnector._wrap_create_connection(connector, *args, req=req, **kwargs)
    except (ClientConnectorCertificateError, ClientConnectorSSLError) as exc:
        counters["ssl.connection_error"] = counters.get("ssl.connection_error", 0) + 1
        setattr(req, _TLS_FAILURE, _ssl_reason(exc))
        raise
    if expectation is not None:
        ssl_object = transport.get_extra_info("ssl_object")
        reason = expectation.failure(ssl_object.getpeercert() if ssl_object is not None else None)
        if reason is not None:
            # Closed before any request byte is written: the request never reaches this peer.
            transport.close()
            counters["ssl.fail_verify_san"] = counters.get("ssl.fail_verify_san", 0) + 1
            setattr(req, _TLS_FAILURE, f"TLS_error: {reason}")
            raise PeerIdentityRejected(req.connection_key, ssl.SSLCertVerificationError(reason))
    return transport, protocol


def _ssl_reason(exc: ClientConnectorError) -> str:
    error = exc.os_error
    if isinstance(error, ssl.SSLError):
        detail = error.verify_message if isinstance(error, ssl.SSLCertVerificationError) else error.reason
        return f"TLS_error: {error.reason or type(error).__name__}: {detail or error}"
    return f"TLS_error: {error}"
