"""Loopback servers that fail in the ways real upstreams fail."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict


@dataclass
class Upstream:
    name: str
    port: int = 0
    hits: int = 0
    headers: list[CIMultiDict[str]] = field(default_factory=list)  # case-insensitive, as HTTP headers are
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set on the first request


@asynccontextmanager
async def http_upstream(name: str, behaviour: str, release: asyncio.Event) -> AsyncIterator[Upstream]:
    """``ok`` answers 200; ``503`` always 503; ``block`` waits for ``release`` (slow / hung server)."""
    upstream = Upstream(name)

    async def handle(request: web.Request) -> web.Response:
        upstream.hits += 1
        upstream.arrived.set()
        upstream.headers.append(CIMultiDict(request.headers))
        if behaviour == "503":
            return web.Response(status=503, text=f"{name} unavailable")
        if behaviour == "block":
            await release.wait()
        return web.Response(text=name)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield upstream
    finally:
        release.set()
        await runner.cleanup()


@asynccontextmanager
async def closing_upstream(name: str) -> AsyncIterator[Upstream]:
    """Reads the request head, then closes the connection without answering."""
    upstream = Upstream(name)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream.hits += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    try:
        yield upstream
    finally:
        server.close()
        await server.wait_closed()


def mesh_yaml(ports: dict[str, int], *, dr_policy: str = "", vs_rule: str = "", vs_annotations: str = "") -> str:
    endpoints = "\n".join(
        f"  - {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{host: {name}}}}}" for name, port in ports.items()
    )
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc, namespace: default}}
spec:
  hosts: [svc.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints:
{endpoints}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc, namespace: default}}
spec:
  host: svc
  trafficPolicy:
    loadBalancer: {{simple: ROUND_ROBIN}}
{dr_policy}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: svc
  namespace: default
{vs_annotations}
spec:
  hosts: [svc]
  http:
  - route: [{{destination: {{host: svc}}}}]
{vs_rule}
"""


@asynccontextmanager
async def unaccepting_port() -> AsyncIterator[int]:
    """A loopback port whose accept queue is full: new TCP handshakes hang (SYNs are dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    loop = asyncio.get_running_loop()
    for _ in range(3):  # a backlog of 0 still queues one; fill it and any slack
        filler = socket.socket()
        filler.setblocking(False)
        with suppress(TimeoutError, OSError):
            await asyncio.wait_for(loop.sock_connect(filler, ("127.0.0.1", port)), 0.2)
        fillers.append(filler)
    try:
        yield port
    finally:
        for s in [*fillers, listener]:
            s.close()
