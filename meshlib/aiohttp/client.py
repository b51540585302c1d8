"""The aiohttp client middleware: every request of a session goes through the mesh.

Per request: build a :class:`~meshlib.request.RequestView`, :func:`decide`
the route, then either pass the request through (not a mesh host), answer
locally (404 / 502 / redirect / direct response), or run the resilience stack
(:func:`~meshlib.resilience.attempts.run_upstream_call`) whose ``send`` dials
the picked endpoint. Dialling rewrites only the URL's host and port: the Host
header keeps the logical name (``server_hostname`` keeps TLS verification on
it), and aiohttp's pool is then keyed per endpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from aiohttp import (
    ClientConnectionError,
    ClientConnectorError,
    ClientHandlerType,
    ClientMiddlewareType,
    ClientOSError,
    ClientRequest,
    ClientResponse,
    ClientResponseError,
    ConnectionTimeoutError,
    ServerDisconnectedError,
    hdrs,
)
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from meshlib.aiohttp.body_deadline import guard_body
from meshlib.aiohttp.connector import set_connect_timeout, set_peer_check, tls_failure
from meshlib.aiohttp.fused import FusedPath, timeout_hint
from meshlib.aiohttp.local_reply import local_response
from meshlib.aiohttp.mirror import MirrorSender, ShadowTls
from meshlib.aiohttp.observe import begin_observation, end_observation, traced_retry
from meshlib.aiohttp.total_timeout import TotalTimeouts, settle
from meshlib.config.model import Endpoint, HeaderOps, MeshSnapshot
from meshlib.decision import Action, decide
from meshlib.errors import MeshError
from meshlib.request import RequestView
from meshlib.request_id import new_request_id
from meshlib.resilience.attempts import LocalReply, UpstreamRunner
from meshlib.resilience.outcome import Outcome, OutcomeKind, response_outcome
from meshlib.resilience.retry import is_idempotent_method
from meshlib.resilience.timer import QueuedTimer
from meshlib.routing import apply_header_ops, mirrors_to_send
from meshlib.tracing.observation import Observation
from meshlib.tracing.propagation import INBOUND_HEADERS, inject

if TYPE_CHECKING:

    from meshlib.mesh import Mesh

_NO_QUERY: dict[str, str] = {}
_ATTEMPTS = [str(n) for n in range(10)]
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_TLS_SCHEMES = {"http": "https", "ws": "wss"}
_URL_CACHE_SIZE = 4096
ATTEMPT_COUNT = "x-envoy-attempt-count"
EXPECTED_TIMEOUT = "x-envoy-expected-rq-timeout-ms"

_CONNECT_FAILURE = Outcome(OutcomeKind.CONNECT_FAILURE)
_RESET = Outcome(OutcomeKind.RESET)
_PROTOCOL_ERROR = Outcome(OutcomeKind.PROTOCOL_ERROR)


def _classify(response: ClientResponse) -> Outcome:
    return response_outcome(response.status)


def _classify_error(exc: BaseException) -> Outcome | None:
    """Map aiohttp's exceptions to outcomes; anything else is the caller's error, re-raised."""
    if isinstance(exc, (ClientConnectorError, ConnectionTimeoutError)):
        return _CONNECT_FAILURE  # Envoy counts a connect timeout as a connect failure (UF)
    if isinstance(exc, (ServerDisconnectedError, ClientOSError, ClientConnectionError)):
        return _RESET
    if isinstance(exc, ClientResponseError) and isinstance(exc.__cause__, HttpProcessingError):
        # aiohttp's parser refused the upstream's bytes (a bad status line or header) before any
        # response existed. Envoy: 503 UPE, retried as a reset. (A ClientResponseError an inner
        # middleware raises itself, e.g. raise_for_status, is the caller's business.)
        return _PROTOCOL_ERROR
    return None


def _discard(response: ClientResponse) -> None:
    response.release()


def client_middleware(mesh: Mesh, *, suppress_envoy_headers: bool = False) -> ClientMiddlewareType:
    """Build the middleware bound to ``mesh`` (reads its current state per request).

    ``suppress_envoy_headers``: send no ``x-envoy-attempt-count`` / ``x-envoy-expected-rq-timeout-ms``
    hints upstream, as Envoy's router option of that name.
    """
    rng = mesh.rng
    runner: UpstreamRunner[ClientResponse] = UpstreamRunner(
        stats=mesh.host_stats,
        rng=rng,
        clock=mesh.clock,
        classify=_classify,
        classify_error=_classify_error,
        discard=_discard,
        guard_body=guard_body,
        owner=mesh,
    )
    build_url = URL.build
    # The dialled URL per (endpoint, scheme, path, query): a reused URL object keeps the parts
    # yarl computes lazily (host, port, path_qs...) that aiohttp reads several times per request.
    endpoint_urls: dict[tuple[str, int, str, str, str], URL] = {}
    mirror_sender = mesh._mirrors = MirrorSender()
    # Plain requests run fused in one coroutine (meshlib.aiohttp.fused); the rest take route_request.
    fused_path = FusedPath(mesh, runner, _apply_response_ops, suppress_hints=suppress_envoy_headers)
    totals = TotalTimeouts()

    # A plain function handing back the coroutine (aiohttp awaits it): one coroutine frame
    # less to enter, suspend and resume on every request.
    def meshlib_client_middleware(req: ClientRequest, handler: ClientHandlerType) -> Awaitable[ClientResponse]:
        telemetry = mesh._telemetry
        carried = INBOUND_HEADERS.get()
        if carried:  # called while handling an inbound request: carry its trace headers on
            inject(req.headers, carried, skip_trace=telemetry is not None and telemetry.tracing is not None)
        total = totals.arm(req)  # aiohttp's total timeout, when the session leaves it to meshlib
        # None with telemetry off, and when tracing alone is on and the span is sampled out (its context
        # is on the request by then): the request then costs what it costs with telemetry off.
        observation = begin_observation(req, telemetry) if telemetry is not None else None
        fused = fused_path.lookup(req)
        if fused is not None:
            return fused_path.request(req, handler, fused, total, observation)
        return route_request(req, handler, observation, total)

    async def route_request(
        req: ClientRequest, handler: ClientHandlerType, observation: Observation | None,
        total: QueuedTimer | None = None,
    ) -> ClientResponse:
        # With telemetry on, the middleware began ``observation`` and it is finished here, so an
        # observed request runs in this one coroutine as well; ``response`` is what it ended with.
        response: ClientResponse | None = None
        try:
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
            if observation is not None:
                observation.describe(decision, view.authority)
            if decision.action is Action.PASSTHROUGH:
                response = await handler(req)
                return response
            if decision.action is Action.LOCAL_REPLY:
                extra = [("location", decision.location)] if decision.location else []
                response = local_response(req, decision.status, decision.body, headers=extra, flag=decision.flag)
                return response

            route = decision.hit.route  # type: ignore[union-attr]
            destination = decision.destination
            cluster = decision.cluster
            balancer = decision.balancer
            assert destination is not None and cluster is not None and balancer is not None

            if hdrs.X_REQUEST_ID not in headers:
                headers[hdrs.X_REQUEST_ID] = new_request_id()
            if not route.headers.request.empty:
                apply_header_ops(route.headers.request, headers)
            if not destination.headers.request.empty:
                apply_header_ops(destination.headers.request, headers)
            path = url.raw_path if decision.path is None else decision.path
            if decision.authority is not None:
                headers[hdrs.HOST] = decision.authority
            scheme = url.scheme
            query = url.raw_query_string
            if cluster.policy.tls.mode != "DISABLE":
                # DestinationRule tls: TLS on the wire whatever scheme the application wrote, as a sidecar does
                # (passthrough clusters too).
                try:
                    upstream_tls = mesh.upstream_tls().for_cluster(cluster)
                except MeshError as exc:  # TlsUnavailable: no certificate, unreadable files
                    response = local_response(
                        req, 503, f"meshlib: upstream connect error: {exc}\n".encode(), flag="UF"
                    )
                    return response
                scheme = _TLS_SCHEMES.get(scheme, scheme)
                req._ssl = upstream_tls.context
                req.server_hostname = upstream_tls.server_hostname or url.host
                set_peer_check(req, upstream_tls.expectation, mesh._runtimes.runtimes[cluster.name].counters)
            if not cluster.endpoints and cluster.resolution == "NONE":
                # passthrough cluster: dial the original destination (its port, also when TLS was added)
                if scheme != url.scheme and url.explicit_port is None:
                    req.url = build_url(scheme=scheme, host=url.raw_host or "", port=port, path=path,
                                        query_string=query, encoded=True)
                else:
                    req.url = build_url(
                        scheme=scheme, authority=url.raw_authority, path=path, query_string=query, encoded=True
                    )
                response = await handler(req)
                return response
            if scheme in ("https", "wss") and req.server_hostname is None:
                req.server_hostname = url.host
            if route.mirrors:
                mirrors = mirrors_to_send(route, rng)
                if mirrors:
                    mirror_sender.send(
                        req, mirrors, balancers=state.balancers, stats=mesh.host_stats, rng=rng, now=mesh.clock(),
                        path=path, query=query, tls_of=lambda name: _mirror_tls(mesh, state.snapshot, name),
                    )
            pool = cluster.policy.connection_pool
            if pool.max_requests_per_connection == 1:
                # Istio's maxRequestsPerConnection: 1 disables keep-alive; the server closes after answering.
                headers[hdrs.CONNECTION] = "close"

            set_connect_timeout(req, pool.connect_timeout_s)

            # A plain function handing back the transport's coroutine: no frame of its own per attempt.
            def send(endpoint: Endpoint, attempt: int, timeout_hint_s: float | None) -> Awaitable[ClientResponse]:
                key = (endpoint.address, endpoint.port, scheme, path, query)
                endpoint_url = endpoint_urls.get(key)
                if endpoint_url is None:
                    if len(endpoint_urls) >= _URL_CACHE_SIZE:
                        endpoint_urls.clear()
                    endpoint_url = endpoint_urls[key] = build_url(
                        scheme=scheme, host=endpoint.address, port=endpoint.port, path=path, query_string=query,
                        encoded=True,
                    )
                req.url = endpoint_url
                if not suppress_envoy_headers:
                    headers[ATTEMPT_COUNT] = _ATTEMPTS[attempt] if attempt < 10 else str(attempt)
                    if timeout_hint_s is not None:
                        headers[EXPECTED_TIMEOUT] = timeout_hint(timeout_hint_s)
                if attempt > 1 and observation is not None and observation.span is not None:
                    return traced_retry(req, handler, endpoint, attempt, observation)
                return handler(req)

            def body_replayable() -> bool:
                return not getattr(req.body, "consumed", False)

            result = await runner.run(
                decision,
                mesh._runtimes.runtimes[cluster.name],
                send,
                idempotent=is_idempotent_method(req.method),
                body_replayable=body_replayable,
                hash_key=balancer.request_hash(view) if cluster.policy.lb.hash_policies else None,
                route_bucket=state.route_buckets.get(id(route)) if state.route_buckets else None,
                report=observation,
            )
            if isinstance(result, LocalReply):
                body = result.body
                if result.flag == "UF":
                    reason = tls_failure(req)
                    if reason is not None:  # Envoy's upstream_transport_failure_reason
                        body = f"{body}, transport failure reason: {reason}"
                response = local_response(
                    req, result.status, f"meshlib: {body}\n".encode(), headers=result.headers, flag=result.flag
                )
                return response
            if not (route.headers.response.empty and destination.headers.response.empty):
                _apply_response_ops(result, route.headers.response, destination.headers.response)
            response = result
            return response
        except asyncio.CancelledError:
            if total is not None and total.expired():  # meshlib's ClientTimeout.total (total_timeout.py)
                raise TimeoutError from None
            raise
        finally:
            if total is not None:
                settle(total, response)
            if observation is not None:
                end_observation(observation, req, response)

    fused_path.fallback = route_request
    return meshlib_client_middleware


def _mirror_tls(mesh: Mesh, snapshot: MeshSnapshot, cluster_name: str) -> ShadowTls | None:
    """A mirror cluster's TLS (None: plaintext); raises MeshError when it cannot be honoured."""
    cluster = snapshot.clusters.get(cluster_name)
    if cluster is None or cluster.policy.tls.mode == "DISABLE":
        return None
    return mesh.upstream_tls().for_cluster(cluster), mesh._runtimes.runtimes[cluster.name].counters


def _apply_response_ops(response: ClientResponse, *ops: HeaderOps) -> None:
    headers = CIMultiDict(response._headers)
    for op in ops:
        if not op.empty:
            apply_header_ops(op, headers)
    response._headers = CIMultiDictProxy(headers)
    response._cache.pop("headers", None)  # ClientResponse caches .headers on first read
