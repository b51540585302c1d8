"""Traffic mirroring (VirtualService ``mirror``/``mirrors``): fire-and-forget shadow copies.

As in Envoy, a mirrored request goes to the mirror cluster with ``-shadow``
appended to its Host, its response is read and discarded, and its failure is
invisible to the caller. The copy is sent with ``middlewares=()`` so it is
not routed (or mirrored) again. Bodies given as bytes, text, JSON or forms are
copied; a streaming body can be read only once, so such a request is mirrored
without its body — a documented difference from Envoy, which buffers it.
A mirror cluster with DestinationRule ``tls`` gets its shadow over TLS, with
the same peer check as the primary request, or no shadow at all.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import ClientHandlerType, ClientMiddlewareType, ClientRequest, ClientResponse, ClientTimeout, hdrs
from multidict import CIMultiDict
from yarl import URL

from meshlib.aiohttp.connector import set_peer_check
from meshlib.balancing import ClusterBalancer, PickContext
from meshlib.config.model import Mirror
from meshlib.errors import MeshError
from meshlib.host_stats import HostStatsTable
from meshlib.routing import shadow_authority

if TYPE_CHECKING:
    from meshlib.security.tls_client import UpstreamTls

# A TLS mirror cluster: its client settings and the counters its TLS failures go to.
ShadowTls = tuple["UpstreamTls", dict[str, int]]
_TLS_SCHEMES = {"http": "https", "ws": "wss"}

log = logging.getLogger("meshlib.mirror")

# Shadow requests must not outlive a slow mirror for long (Envoy: the route timeout).
_SHADOW_TIMEOUT = ClientTimeout(total=30)


class MirrorSender:
    """Sends shadow copies and keeps their tasks alive until they finish."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def send(
        self,
        req: ClientRequest,
        mirrors: list[Mirror],
        *,
        balancers: Mapping[str, ClusterBalancer],
        stats: HostStatsTable,
        rng: random.Random,
        now: float,
        path: str,
        query: str,
        tls_of: Callable[[str], ShadowTls | None] | None = None,
    ) -> None:
        body = _replayable_body(req)
        authority = req.headers.get(hdrs.HOST, req.url.raw_authority)
        for mirror in mirrors:
            balancer = balancers.get(mirror.cluster)
            endpoint = balancer.pick(PickContext(rng, now, stats)) if balancer is not None else None
            if endpoint is None:
                continue  # nothing to mirror to: Envoy drops the shadow silently
            headers = CIMultiDict(req.headers)
            headers[hdrs.HOST] = shadow_authority(authority)
            headers.popall(hdrs.CONTENT_LENGTH, None)
            scheme = req.url.scheme
            tls: ShadowTls | None = None
            if tls_of is not None:
                try:
                    tls = tls_of(mirror.cluster)  # the mirror cluster's DestinationRule tls
                except MeshError as exc:
                    log.debug("mirror to %s skipped: %s", mirror.cluster, exc)
                    continue  # its TLS cannot be honoured: no shadow rather than a plaintext one
                if tls is not None:
                    scheme = _TLS_SCHEMES.get(scheme, scheme)
            url = URL.build(
                scheme=scheme, host=endpoint.address, port=endpoint.port, path=path,
                query_string=query, encoded=True,
            )
            task = asyncio.get_running_loop().create_task(self._shadow(req, url, headers, body, tls))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _shadow(
        self, req: ClientRequest, url: URL, headers: CIMultiDict[str], body: bytes | None, tls: ShadowTls | None
    ) -> None:
        extra: dict[str, Any] = {}
        middlewares: tuple[ClientMiddlewareType, ...] = ()
        if tls is not None:
            upstream, counters = tls
            extra = {"ssl": upstream.context, "server_hostname": upstream.server_hostname or req.url.host}

            def check_peer(shadow: ClientRequest, handler: ClientHandlerType) -> Awaitable[ClientResponse]:
                set_peer_check(shadow, upstream.expectation, counters)
                return handler(shadow)

            middlewares = (check_peer,)
        try:
            async with req.session.request(
                req.method, url, headers=headers, data=body, middlewares=middlewares, timeout=_SHADOW_TIMEOUT,
                **extra,
            ) as resp:
                await resp.read()
        except Exception as exc:  # a shadow's failure never reaches the caller
            log.debug("mirror to %s failed: %r", url, exc)

    async def drain(self) -> None:
        """Wait for shadow requests in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _replayable_body(req: ClientRequest) -> bytes | None:
    payload = req.body
    value = getattr(payload, "_value", None)
    if isinstance(value, bytes):
        return value
    return None
