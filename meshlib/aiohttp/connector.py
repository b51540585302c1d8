"""The connector behind ``mesh.session()``: applies each cluster's connect timeout.

aiohttp takes the socket-connect timeout from the session's ``ClientTimeout``,
out of a middleware's reach. DestinationRule ``tcp.connectTimeout`` (Istio
default 10 s) is per cluster, so the client middleware publishes the picked
cluster's value in a context variable around each attempt and this connector
caps ``sock_connect`` with it when it opens a new connection. Pooled
connections cost one context-variable read.

Sessions you build yourself get the same behaviour with
``aiohttp.ClientSession(connector=mesh.connector(), middlewares=(mesh.middleware(),))``.
"""

from __future__ import annotations

import contextvars
from typing import Any

import attr
from aiohttp import ClientRequest, ClientTimeout, TCPConnector
from aiohttp.connector import Connection

# The connect timeout (seconds) of the cluster the current attempt dials; None outside an attempt.
CONNECT_TIMEOUT: contextvars.ContextVar[float | None] = contextvars.ContextVar("meshlib_connect_timeout", default=None)


class MeshConnector(TCPConnector):
    """A ``TCPConnector`` that honours the per-cluster connect timeout set by the mesh middleware."""

    # aiohttp's own signature: the timeout object is handed down, not awaited on.
    async def connect(
        self,
        req: ClientRequest,
        traces: list[Any],
        timeout: ClientTimeout,  # noqa: ASYNC109
    ) -> Connection:
        limit = CONNECT_TIMEOUT.get()
        if limit is not None and (timeout.sock_connect is None or limit < timeout.sock_connect):
            timeout = _capped_timeout(timeout, limit)
        return await super().connect(req, traces, timeout)


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
