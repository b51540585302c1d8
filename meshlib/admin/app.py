"""The admin (debug) HTTP app: Envoy-like endpoints over a live :class:`~meshlib.mesh.Mesh`.

==================  =====================================================================
``/``               an HTML page for a person (plain JS, no external assets), refreshed
``/config_dump``    the active snapshot, Envoy's ``config_dump`` shape, with version and status
``/clusters``       clusters and hosts (health, ejection, active requests, stats);
                    ``?format=text`` gives Envoy's ``name::host::stat::value`` lines
``/routes``         route configurations → virtual hosts → routes (match, weights, policies)
``/stats``          Envoy's ``name: value`` text; ``?format=json``, ``?format=prometheus``
                    (``stats_text`` if given, else ``mesh.prometheus_text()``), ``?filter=RE2``,
                    ``?usedonly`` (:mod:`meshlib.admin.stats_view`)
``/stats/prometheus`` the Prometheus text, as Envoy's path
``/status``         :meth:`Mesh.status` (config source, version, last rejected edit, warnings)
``/ready``          ``LIVE`` (200) once a configuration is in force, else ``INITIALIZING`` (503)
``/server_info``    version, state, uptime, node identity and config source (Envoy's shape, JSON)
``/help``           this list as text
==================  =====================================================================

The page also carries a server-rendered copy of its tables inside ``<noscript>``
(:mod:`meshlib.admin.fallback`), so it is readable without JavaScript.

Every endpoint reads the mesh at request time, so a hot reload shows at once.
Bind it to loopback: like Envoy's admin port it has no authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import signal
import time
from collections.abc import Callable, Iterable
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
from meshlib.admin.fallback import FALLBACK_MARKER, render_fallback
from meshlib.admin.host_check import host_check_middleware, is_loopback_bind
from meshlib.admin.stats_view import (
    FilterError,
    compile_filter,
    filter_prometheus,
    render_json,
    render_text,
    stats_lines,
)
from meshlib.mesh import Mesh

__all__ = ["MESH_KEY", "STATS_TEXT_KEY", "AdminServer", "admin_app", "run_admin", "start_admin"]

StatsText = Callable[[], str]

MESH_KEY = web.AppKey("meshlib_mesh", Mesh)
STATS_TEXT_KEY: web.AppKey[StatsText | None] = web.AppKey("meshlib_stats_text")
STARTED_KEY = web.AppKey("meshlib_admin_started", float)  # time.monotonic() when the app was built

#: ``/help``: every endpoint and what it serves (Envoy's ``/help`` lists its own the same way).
ENDPOINTS: tuple[tuple[str, str], ...] = (
    ("/", "the admin page (live with JavaScript; server-rendered tables without)"),
    ("/clusters", "clusters and hosts as JSON; ?format=text for Envoy's name::host::stat::value lines"),
    ("/config_dump", "the configuration in force, Envoy's config_dump shape"),
    ("/help", "this list"),
    ("/ready", "LIVE (200) once a configuration is in force, else INITIALIZING (503)"),
    ("/routes", "route configurations, virtual hosts and routes"),
    ("/server_info", "version, state, uptime, node identity and config source"),
    ("/stats", "stats as name: value; ?format=json|prometheus, ?filter=REGEX (RE2), ?usedonly"),
    ("/stats/prometheus", "stats in the Prometheus text format"),
    ("/status", "config source, version, the last rejected edit and the warnings in force"),
)

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
    mesh = _mesh(request)
    fallback = render_fallback(plain(mesh.status()), clusters_view(mesh), routes_view(mesh))
    page = page_html().replace(FALLBACK_MARKER, fallback, 1)
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})


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


async def _prometheus(request: web.Request) -> web.Response:
    provider = request.app[STATS_TEXT_KEY]
    text = provider() if provider is not None else _mesh(request).prometheus_text()
    keep = compile_filter(request.query.get("filter"))
    text = filter_prometheus(text, keep, used_only="usedonly" in request.query)
    return web.Response(body=text.encode(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})


async def _stats(request: web.Request) -> web.Response:
    form = request.query.get("format", "text")
    try:
        if form == "prometheus":
            return await _prometheus(request)
        if form not in ("text", "json"):
            raise web.HTTPBadRequest(text=f"format must be text, json or prometheus, not {form!r}\n")
        keep = compile_filter(request.query.get("filter"))
    except FilterError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    mesh = _mesh(request)
    mesh.flush_telemetry()
    lines = stats_lines(mesh.stats(), mesh.metrics)
    used_only = "usedonly" in request.query
    if form == "json":
        return _json(render_json(lines, keep, used_only=used_only))
    return web.Response(text=render_text(lines, keep, used_only=used_only), content_type="text/plain",
                        headers={"Cache-Control": "no-store"})


async def _stats_prometheus(request: web.Request) -> web.Response:
    try:
        return await _prometheus(request)
    except FilterError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None


def _is_live(mesh: Mesh) -> bool:
    return bool(mesh.snapshot.version)  # an xDS mesh has no version until its first configuration


async def _ready(request: web.Request) -> web.Response:
    live = _is_live(_mesh(request))
    return web.Response(text="LIVE\n" if live else "INITIALIZING\n", status=200 if live else 503)


async def _server_info(request: web.Request) -> web.Response:
    from meshlib import __version__

    mesh = _mesh(request)
    uptime = f"{int(time.monotonic() - request.app[STARTED_KEY])}s"
    workload = mesh.snapshot.workload
    status = mesh.status()
    return _json({
        "version": f"meshlib/{__version__} python/{platform.python_version()}",
        "state": "LIVE" if _is_live(mesh) else "INITIALIZING",
        "uptime_current_epoch": uptime,
        "uptime_all_epochs": uptime,
        "node": {
            "id": workload.name,
            "metadata": {"NAMESPACE": workload.namespace, "LABELS": dict(workload.labels)},
            "locality": plain(workload.locality),
        },
        "config": {"source": status.get("source"), "version": mesh.snapshot.version},
    })


async def _help(request: web.Request) -> web.Response:
    del request
    lines = ["admin commands are:", *(f"  {path}: {text}" for path, text in ENDPOINTS)]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def admin_app(mesh: Mesh, *, stats_text: StatsText | None = None, allowed_hosts: Iterable[str] = ()) -> web.Application:
    """An aiohttp application serving the admin endpoints for ``mesh``.

    ``stats_text`` renders ``/stats`` (e.g. the tracing package's Prometheus
    renderer, which adds Istio's request metrics); without it ``/stats`` holds
    ``mesh.stats()`` as ``envoy_cluster_<stat>{cluster_name="..."}`` lines.
    Requests are answered only for a trusted ``Host`` (localhost, an IP literal or
    ``allowed_hosts``): DNS-rebinding protection, see :mod:`meshlib.admin.host_check`.
    """
    app = web.Application(middlewares=[host_check_middleware(allowed_hosts)])
    app[MESH_KEY] = mesh
    app[STATS_TEXT_KEY] = stats_text
    app[STARTED_KEY] = time.monotonic()
    app.router.add_get("/", _index)
    app.router.add_get("/config_dump", _config_dump)
    app.router.add_get("/clusters", _clusters)
    app.router.add_get("/routes", _routes)
    app.router.add_get("/stats", _stats)
    app.router.add_get("/stats/prometheus", _stats_prometheus)  # Envoy's path for the Prometheus text
    app.router.add_get("/status", _status)
    app.router.add_get("/ready", _ready)
    app.router.add_get("/server_info", _server_info)
    app.router.add_get("/help", _help)
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
    """Start serving :func:`admin_app` on ``host:port`` (``port=0``: any free port) and return at once.

    Loopback is the default; any other address is logged as a warning (the admin view has no authentication).
    """
    if not is_loopback_bind(host):
        logging.getLogger(__name__).warning(
            "admin server bound to %s: reachable from other machines, without authentication", host
        )
    runner = web.AppRunner(admin_app(mesh, stats_text=stats_text, allowed_hosts=[host]), access_log=None)
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
