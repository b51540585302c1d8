"""aiohttp server middleware: the inbound request's context for the calls its handler makes.

For the duration of the handler:

- the inbound **propagation headers** (``x-request-id`` — generated here, at
  the edge, when absent — W3C/B3 trace context, baggage and the rest of
  semantics.md §7) are kept in a context variable, and the client middleware
  copies them onto every outbound call, across ``create_task``/``gather``;
- the inbound **deadline** (``grpc-timeout`` wins over
  ``x-envoy-expected-rq-timeout-ms``) bounds every outbound call, which an
  Envoy sidecar cannot do;
- with tracing on, a SERVER span is current, so outbound CLIENT spans join its
  trace; with telemetry sinks, one :class:`InboundRecord` is reported;
- PeerAuthentication ``STRICT`` (for the port the request arrived on) refuses
  plaintext requests and TLS without a client certificate with ``403`` and
  ``Connection: close`` (:mod:`meshlib.security.peer`);
- AuthorizationPolicies that apply to this workload are enforced first: a
  denied request gets Envoy's ``403 RBAC: access denied`` and never reaches
  the handler (:mod:`meshlib.security.authz`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from meshlib.resilience.deadline import deadline_from_headers, deadline_scope
from meshlib.security.authz import DENIED_BODY
from meshlib.security.authz_inbound import authorize_aiohttp
from meshlib.security.peer import refused_response, strict_refusal
from meshlib.tracing.propagation import INBOUND_HEADERS, extract
from meshlib.tracing.record import InboundRecord, deliver_inbound

if TYPE_CHECKING:
    from meshlib.mesh import Mesh
    from meshlib.tracing.telemetry import Telemetry


def server_middleware(mesh: Mesh) -> Middleware:
    clock = mesh.clock

    @web.middleware
    async def meshlib_server_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer_auth = mesh._peer_auth  # PeerAuthentication STRICT: plaintext refused before anything else
        if peer_auth is not None:
            refusal = strict_refusal(peer_auth, request)
            if refusal is not None:
                return refused_response(mesh, refusal)
        authz = mesh._state.authz  # AuthorizationPolicy first, as Envoy's RBAC filter: a denied request runs nothing
        if authz is not None and not authorize_aiohttp(authz, mesh._authz_stats, request).allowed:
            handler = _access_denied  # still observed below: the 403 is traced and counted like any response
        headers = request.headers
        token = INBOUND_HEADERS.set(extract(headers, headers.keys()))
        try:
            telemetry = mesh._telemetry
            deadline = deadline_from_headers(headers, clock())
            if deadline is None:
                if telemetry is None:
                    return await handler(request)
                return await _observed(request, handler, telemetry)
            with deadline_scope(deadline):
                if telemetry is None:
                    return await handler(request)
                return await _observed(request, handler, telemetry)
        finally:
            INBOUND_HEADERS.reset(token)

    return meshlib_server_middleware


async def _access_denied(request: web.Request) -> web.StreamResponse:
    return web.Response(status=403, text=DENIED_BODY)


async def _observed(request: web.Request, handler: Handler, telemetry: Telemetry) -> web.StreamResponse:
    tracing = telemetry.tracing
    start_ns = time.time_ns()
    started = time.perf_counter()
    span_and_token = (
        tracing.start_server(request.method, request.scheme, request.path, request.headers, request.remote)
        if tracing is not None
        else None
    )
    status = 500
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        deferred = telemetry.deferred
        if tracing is not None and span_and_token is not None:
            tracing.detach_server(span_and_token[1])
            # Ended after the response is written (meshlib.tracing.deferred), with this end time.
            deferred.defer(tracing.finish_server, span_and_token[0], time.time_ns(), request.method, status, route)
        if telemetry.sinks:
            carried = dict(INBOUND_HEADERS.get())
            record = InboundRecord(
                start_time_unix_ns=start_ns,
                duration_s=time.perf_counter() - started,
                method=request.method,
                scheme=request.scheme,
                authority=request.host,
                path=request.path,
                status=status,
                route=route,
                request_id=carried.get("x-request-id"),
                user_agent=request.headers.get(hdrs.USER_AGENT),
                source_address=request.remote,
                request_bytes=request.content_length or 0,
                response_bytes=(response.content_length or 0) if response is not None else 0,
            )
            deferred.defer(deliver_inbound, telemetry.sinks, record)
