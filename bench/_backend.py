"""The "ok" upstream of the benchmarks, run as its own process.

Usage: python bench/_backend.py PORT_FILE [--aiohttp] — binds 127.0.0.1:0 and writes the port to PORT_FILE.

By default it is a bare asyncio protocol answering every HTTP/1.1 request with
``200 ok`` on a kept-alive connection: it reads up to the end of the headers
(and skips a ``Content-Length`` body) without parsing anything else, so that it
costs a fraction of what the client under test costs and the client, not the
upstream, is what saturates at concurrency 16 — an aiohttp server spends about as
much CPU per request as an aiohttp client, so with it both sides saturate
together and the headers a mesh adds (``x-request-id``, Envoy's hints) are
charged to the client's ratio as the upstream's parsing time. ``--aiohttp``
serves the same answer from an aiohttp server instead (what the figures before
3 December were measured against).
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from aiohttp import web

_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\r\nok"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_MAX_HEAD = 64 * 1024


class _Ok(asyncio.Protocol):
    """Answers each request on the connection in order; a request without its head's end waits for more."""

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        answers = 0
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            length = _CONTENT_LENGTH.search(buffer, 0, end + 2)
            size = end + 4 + (int(length.group(1)) if length else 0)
            if len(buffer) < size:
                break
            buffer = buffer[size:]
            answers += 1
        self._buffer = buffer
        assert self._transport is not None
        if len(buffer) > _MAX_HEAD:
            self._transport.close()
        elif answers:
            self._transport.write(_RESPONSE * answers)


async def _raw(port_file: Path) -> None:
    server = await asyncio.get_running_loop().create_server(_Ok, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    await asyncio.to_thread(port_file.write_text, str(port))
    await asyncio.Event().wait()


async def _aiohttp(port_file: Path) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await asyncio.to_thread(port_file.write_text, str(port))
    await asyncio.Event().wait()


if __name__ == "__main__":
    serve = _aiohttp if "--aiohttp" in sys.argv[2:] else _raw
    asyncio.run(serve(Path(sys.argv[1])))
