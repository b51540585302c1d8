"""The aiohttp client middleware: every request of a session goes through the mesh.

Per request: build a :class:`~meshlib.request.RequestView`, :func:`decide`
the route, then either pass the request through (not a mesh host), answer
locally (404 / 502 / 503 / redirect / direct response), or pick an endpoint
and dial it. Dialling rewrites only the URL's host and port: the Host header
keeps the logical name (and ``server_hostname`` keeps TLS verification on it),
and aiohttp's pool is then keyed per endpoint.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, ClientMiddlewareType, hdrs
from multidict import CIMultiDict, CIMultiDictProxy

from meshlib.aiohttp.local_reply import local_response
from meshlib.balancing import PickContext, observe_rtt, request_hash
from meshlib.config.model import HeaderOps, LbKind
from meshlib.decision import Action, decide
from meshlib.request import RequestView
from meshlib.routing import apply_header_ops

if TYPE_CHECKING:
    from meshlib.mesh import Mesh

_NO_QUERY: dict[str, str] = {}
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def client_middleware(mesh: Mesh) -> ClientMiddlewareType:
    """Build the middleware bound to ``mesh`` (reads its current state per request)."""
    rng = mesh.rng
    clock = mesh.clock
    stats = mesh.host_stats

    async def meshlib_client_middleware(req: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        state = mesh._state  # one read: this request sees one configuration
        url = req.url
        headers = req.headers
        port = url.port or _DEFAULT_PORTS.get(url.scheme, 80)
        view = RequestView(
            req.method,
            headers.get(hdrs.HOST) or url.raw_authority,
            url.raw_path,
            url.scheme,
            headers,
            url.query if url.raw_query_string else _NO_QUERY,
        )
        decision = decide(state, view, port, rng)
        if decision.action is Action.PASSTHROUGH:
            return await handler(req)
        if decision.action is Action.LOCAL_REPLY:
            extra = [("location", decision.location)] if decision.location else []
            return local_response(req, decision.status, decision.body, headers=extra, flag=decision.flag)

        route = decision.hit.route  # type: ignore[union-attr]
        destination = decision.destination
        cluster = decision.cluster
        balancer = decision.balancer
        assert destination is not None and cluster is not None and balancer is not None

        if hdrs.X_REQUEST_ID not in headers:
            headers[hdrs.X_REQUEST_ID] = str(uuid.uuid4())
        _apply_request_ops(headers, route.headers.request)
        _apply_request_ops(headers, destination.headers.request)
        if decision.path is not None:
            url = url.with_path(decision.path, encoded=True, keep_query=True)
        if decision.authority is not None:
            headers[hdrs.HOST] = decision.authority

        now = clock()
        lb = cluster.policy.lb
        hash_key = request_hash(lb.hash_policies, view) if lb.hash_policies else None
        endpoint = balancer.pick(PickContext(rng, now, stats, hash_key, 0, ()))
        if endpoint is None:
            if cluster.endpoints or cluster.resolution != "NONE":
                return local_response(req, 503, b"meshlib: no healthy upstream\n", flag="UH")
            req.url = url  # NONE resolution: dial the original destination
            return await handler(req)

        req.url = url.with_host(endpoint.address).with_port(endpoint.port)
        if url.scheme in ("https", "wss") and req.server_hostname is None:
            req.server_hostname = url.host
        host = stats.get(endpoint.key, now)
        host.active_requests += 1
        try:
            response = await handler(req)
        finally:
            host.active_requests -= 1
        if lb.kind is LbKind.PEAK_EWMA:
            done = clock()
            observe_rtt(host, done - now, done, lb.peak_ewma_decay_s)
        if not (route.headers.response.empty and destination.headers.response.empty):
            _apply_response_ops(response, route.headers.response, destination.headers.response)
        return response

    return meshlib_client_middleware


def _apply_request_ops(headers: CIMultiDict[str], ops: HeaderOps) -> None:
    if not ops.empty:
        apply_header_ops(ops, headers)


def _apply_response_ops(response: ClientResponse, *ops: HeaderOps) -> None:
    headers = CIMultiDict(response.headers)
    for op in ops:
        if not op.empty:
            apply_header_ops(op, headers)
    response._headers = CIMultiDictProxy(headers)
