"""The connector behind ``mesh.session()``: applies each cluster's connect timeout.

aiohttp takes the socket-connect timeout from the session's ``ClientTimeout``,
out of a middleware's reach. DestinationRule ``tcp.connectTimeout`` (Istio
default 10 s) is per cluster, so the client middleware records the picked
cluster's value on the request it dials (:func:`set_connect_timeout`) and this
connector caps ``sock_connect`` with it when it opens a new connection.
Pooled connections cost one dictionary read.

Sessions you build yourself get the same behaviour with
``aiohttp.ClientSession(connector=mesh.connector(), middlewares=(mesh.middleware(),))``.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import attr
from aiohttp import ClientRequest, ClientTimeout, TCPConnector
from aiohttp.connector import Connection

# The request attribute holding the connect timeout (seconds) of the cluster the attempt dials.
_CONNECT_TIMEOUT = "_meshlib_connect_timeout_s"


def set_connect_timeout(req: ClientRequest, timeout_s: float) -> None:
    """Record on ``req`` the connect timeout of the cluster it is about to dial."""
    # setattr, not vars(): reading __dict__ makes CPython materialise one per request.
    setattr(req, _CONNECT_TIMEOUT, timeout_s)


class MeshConnector(TCPConnector):
    """A ``TCPConnector`` that honours the per-cluster connect timeout set by the mesh middleware."""

    # aiohttp's own signature, as a plain method handing back the base class's coroutine
    # (aiohttp awaits it): no coroutine frame of our own on every request.
    def connect(
        self,
        req: ClientRequest,
        traces: list[Any],
        timeout: ClientTimeout,
    ) -> Coroutine[Any, Any, Connection]:
        limit: float | None = getattr(req, _CONNECT_TIMEOUT, None)
        if limit is not None and (timeout.sock_connect is None or limit < timeout.sock_connect):
            timeout = _capped_timeout(timeout, limit)
        return super().connect(req, traces, timeout)


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
