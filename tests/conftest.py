"""Shared fixtures: real aiohttp servers on loopback that record what they received."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest_asyncio
from aiohttp import web


@dataclass
class Backend:
    """A loopback HTTP server that answers ``{"name": ..., "path": ...}`` and records requests."""

    name: str
    port: int = 0
    requests: list[web.Request] = field(default_factory=list)

    @property
    def hits(self) -> int:
        return len(self.requests)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


BackendFactory = Callable[[str], Awaitable[Backend]]


@pytest_asyncio.fixture
async def backend() -> AsyncIterator[BackendFactory]:
    runners: list[web.AppRunner] = []

    async def start(name: str) -> Backend:
        server = Backend(name)

        async def handle(request: web.Request) -> web.Response:
            server.requests.append(request)
            return web.json_response(
                {"name": name, "path": request.path_qs, "host": request.headers.get("Host", "")},
                headers={"x-backend": name},
            )

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return server

    yield start
    for runner in runners:
        await runner.cleanup()
