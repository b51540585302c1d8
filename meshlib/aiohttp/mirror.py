"""Traffic mirroring (VirtualService ``mirror``/``mirrors``): fire-and-forget shadow copies.

As in Envoy, a mirrored request goes to the mirror cluster with ``-shadow``
appended to its Host, its response is read and discarded, and its failure is
invisible to the caller. The copy is sent with ``middlewares=()`` so it is
not routed (or mirrored) again. Bodies given as bytes, text, JSON or forms are
copied; a streaming body can be read only once, so such a request is mirrored
without its body — a documented difference from Envoy, which buffers it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping

from aiohttp import ClientRequest, ClientTimeout, hdrs
from multidict import CIMultiDict
from yarl import URL

from meshlib.balancing import ClusterBalancer, PickContext
from meshlib.config.model import Mirror
from meshlib.host_stats import HostStatsTable
from meshlib.routing import shadow_authority

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
            url = URL.build(
                scheme=req.url.scheme, host=endpoint.address, port=endpoint.port, path=path,
                query_string=query, encoded=True,
            )
            task = asyncio.get_running_loop().create_task(self._shadow(req, url, headers, body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _shadow(self, req: ClientRequest, url: URL, headers: CIMultiDict[str], body: bytes | None) -> None:
        try:
            async with req.session.request(
                req.method, url, headers=headers, data=body, middlewares=(), timeout=_SHADOW_TIMEOUT
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
