"""The admin (debug) HTTP app: Envoy-like endpoints over a live :class:`~meshlib.mesh.Mesh`.

==================  =====================================================================
``/``               an HTML page for a person (plain JS, no external assets), refreshed
``/config_dump``    the active snapshot, Envoy's ``config_dump`` shape, with version and status
``/clusters``       clusters and hosts (health, ejection, active requests, stats);
                    ``?format=text`` gives Envoy's ``name::host::stat::value`` lines
``/routes``         route configurations → virtual hosts → routes (match, weights, policies)
``/stats``          Prometheus text (``stats_text`` if given, else ``mesh.stats()`` minimally)
``/status``         :meth:`Mesh.status` (config source, version, last rejected edit)
==================  =====================================================================

Every endpoint reads the mesh at request time, so a hot reload shows at once.
Bind it to loopback: like Envoy's admin port it has no authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from aiohttp import web

from meshlib.admin.config_dump import (
    clusters_text,
    clusters_view,
    config_dump,
    plain,
    routes_view,
)
from meshlib.mesh import Mesh

__all__ = ["MESH_KEY", "STATS_TEXT_KEY", "AdminServer", "admin_app", "run_admin", "start_admin"]

StatsText = Callable[[], str]

MESH_KEY = web.AppKey("meshlib_mesh", Mesh)
STATS_TEXT_KEY: web.AppKey[StatsText | None] = web.AppKey("meshlib_stats_text")

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@cache
def page_html() -> str:
    """The debug page (``meshlib/admin/page.html``)."""
    return (resources.files("meshlib.admin") / "page.html").read_text(encoding="utf-8")


def _json(data: Any) -> web.Response:
    return web.json_response(
        data,
        dumps=lambda obj: json.dumps(obj, indent=2, default=str),
        headers={"Cache-Control": "no-store"},
    )


def _mesh(request: web.Request) -> Mesh:
    return request.app[MESH_KEY]


async def _index(request: web.Request) -> web.Response:
    del request
    return web.Response(text=page_html(), content_type="text/html", headers={"Cache-Control": "no-store"})


async def _config_dump(request: web.Request) -> web.Response:
    return _json(config_dump(_mesh(request)))


async def _clusters(request: web.Request) -> web.Response:
    view = clusters_view(_mesh(request))
    if request.query.get("format") == "text":
        return web.Response(text=clusters_text(view), content_type="text/plain")
    return _json(view)


async def _routes(request: web.Request) -> web.Response:
    return _json(routes_view(_mesh(request)))


async def _status(request: web.Request) -> web.Response:
    return _json(plain(_mesh(request).status()))


async def _stats(request: web.Request) -> web.Response:
    provider = request.app[STATS_TEXT_KEY]
    text = provider() if provider is not None else _mesh(request).prometheus_text()
    return web.Response(body=text.encode(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})


def admin_app(mesh: Mesh, *, stats_text: StatsText | None = None) -> web.Application:
    """An aiohttp application serving the admin endpoints for ``mesh``.

    ``stats_text`` renders ``/stats`` (e.g. the tracing package's Prometheus
    renderer, which adds Istio's request metrics); without it ``/stats`` holds
    ``mesh.stats()`` as ``envoy_cluster_<stat>{cluster_name="..."}`` lines.
    """
    app = web.Application()
    app[MESH_KEY] = mesh
    app[STATS_TEXT_KEY] = stats_text
    app.router.add_get("/", _index)
    app.router.add_get("/config_dump", _config_dump)
    app.router.add_get("/clusters", _clusters)
    app.router.add_get("/routes", _routes)
    app.router.add_get("/stats", _stats)
    app.router.add_get("/stats/prometheus", _stats)  # Envoy's path for the same text
    app.router.add_get("/status", _status)
    return app


@dataclass
class AdminServer:
    """A running admin server (from :func:`start_admin`); ``await close()`` stops it."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:15000/``."""
        return f"http://{self.host}:{self.port}/"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_admin(
    mesh: Mesh, host: str = "127.0.0.1", port: int = 15000, *, stats_text: StatsText | None = None
) -> AdminServer:
    """Start serving :func:`admin_app` on ``host:port`` (``port=0``: any free port) and return at once."""
    runner = web.AppRunner(admin_app(mesh, stats_text=stats_text), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    addresses = runner.addresses  # the port actually bound when port=0
    bound = int(addresses[0][1]) if addresses else port
    return AdminServer(runner, host, bound)


async def run_admin(
    mesh: Mesh,
    host: str = "127.0.0.1",
    port: int = 15000,
    *,
    stats_text: StatsText | None = None,
    on_ready: Callable[[AdminServer], None] | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = False,
) -> None:
    """Serve the admin endpoints until ``stop`` is set or the task is cancelled (``meshlib admin`` runs this).

    ``on_ready`` is called with the :class:`AdminServer` once it listens.
    ``handle_signals=True`` (for a program of its own, like the CLI) makes
    SIGINT and SIGTERM set ``stop``, so the server closes cleanly; a library
    embedding the admin view leaves its application's signals alone.
    The mesh's own sources (hot reload) are the caller's to start.
    """
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if handle_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not main thread / Windows
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
    try:
        server = await start_admin(mesh, host, port, stats_text=stats_text)
        try:
            if on_ready is not None:
                on_ready(server)
            await stop.wait()
        finally:
            await server.close()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
