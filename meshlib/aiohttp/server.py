"""aiohttp server middleware: inbound request context for the calls a handler makes.

The inbound deadline (``grpc-timeout`` wins over
``x-envoy-expected-rq-timeout-ms``) is put in the deadline context variable
for the duration of the handler; the client middleware reads it, so a
handler's outbound calls inherit what is left of its caller's budget — which
an Envoy sidecar cannot do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from meshlib.resilience.deadline import deadline_from_headers, deadline_scope

if TYPE_CHECKING:
    from meshlib.mesh import Mesh


def server_middleware(mesh: Mesh) -> Middleware:
    clock = mesh.clock

    @web.middleware
    async def meshlib_server_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        deadline = deadline_from_headers(request.headers, clock())
        if deadline is None:
            return await handler(request)
        with deadline_scope(deadline):
            return await handler(request)

    return meshlib_server_middleware
