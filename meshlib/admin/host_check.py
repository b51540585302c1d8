"""DNS-rebinding protection for the admin server: only trusted ``Host`` headers are answered.

A web page on ``evil.example`` can make its name resolve to ``127.0.0.1`` and then read
``http://evil.example:15000/config_dump`` from the victim's browser — the browser thinks it is
talking to ``evil.example``. What gives it away is the ``Host`` header. The admin server
answers only when ``Host`` names

- ``localhost`` (or a ``*.localhost`` name, which resolvers keep on loopback),
- an IP address literal (``127.0.0.1``, ``[::1]``, the bound address …) — a page cannot
  rebind an address literal, or
- one of the names passed as ``allowed_hosts`` (e.g. the machine's DNS name when the
  server is deliberately bound beyond loopback);

anything else gets ``421 Misdirected Request`` (nothing is read). Requests without a ``Host``
header (HTTP/1.0 tools, not browsers) are answered.

Example::

    app = web.Application(middlewares=[host_check_middleware(["admin.internal"])])
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

_log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(host_header: str) -> str:
    """The host part of a ``Host`` header, lower case, without port or IPv6 brackets."""
    value = host_header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    name, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        value = name
    return value.rstrip(".")


def is_trusted_host(host_header: str, allowed_hosts: frozenset[str]) -> bool:
    """True when ``host_header`` may be answered (see the module docstring)."""
    name = host_name(host_header)
    if name in allowed_hosts or name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback_bind(host: str) -> bool:
    """True when binding ``host`` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_check_middleware(allowed_hosts: Iterable[str] = ()) -> Middleware:
    """An aiohttp middleware refusing requests whose ``Host`` is not trusted (421)."""
    allowed = frozenset(host_name(h) for h in allowed_hosts if h)

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if host is not None and not is_trusted_host(host, allowed):
            _log.warning("admin: refused a request for Host %r (DNS rebinding protection)", host[:100])
            return web.Response(
                status=421,
                text=f"Host {host[:100]!r} is not served here (DNS rebinding protection); "
                "use localhost or an IP address, or start the admin server with that name allowed\n",
            )
        return await handler(request)

    return check_host
