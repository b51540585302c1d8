"""``ControlPlane``: the embeddable xDS server (ADS over grpc.aio plus a JSON status endpoint).

Wiring only: a :class:`SnapshotCache`, the :class:`AggregatedDiscoveryService`
on a ``grpc.aio`` server, a :class:`StatusBoard` served at ``/status`` by a
small aiohttp app, and a :class:`DebouncedTrigger` so that bursts of
:meth:`ControlPlane.notify_changed` become one rebuild (istiod's debounce).

Resources come either pushed (:meth:`ControlPlane.set_resources`) or pulled
from ``snapshot_source(group)`` — called when a stream of a group without a
snapshot connects and, debounced, after :meth:`notify_changed` for every known
group. The source returns ``{type_url: {name: Message}}`` (e.g.
``meshlib.xds``'s translation for that client kind), or an awaitable of it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web

from meshlib.controlplane.cache import Resources, ResourceSnapshot, SnapshotCache
from meshlib.controlplane.debounce import DEBOUNCE_AFTER, DEBOUNCE_MAX, DebouncedTrigger
from meshlib.controlplane.nodes import client_kind
from meshlib.controlplane.references import ReferenceExtractor, default_references
from meshlib.controlplane.server import AggregatedDiscoveryService
from meshlib.controlplane.status import StatusBoard
from meshlib.lifecycle import StartStopContext

if TYPE_CHECKING:
    from meshlib.security.plane_security import ControlPlaneSecurity

__all__ = ["ControlPlane", "SnapshotSource"]

log = logging.getLogger(__name__)

SnapshotSource = Callable[[str], Resources | Awaitable[Resources] | None]


class ControlPlane(StartStopContext):
    """An ADS server embeddable in tests and apps: ``async with ControlPlane(...) as cp: ...``."""

    def __init__(
        self,
        snapshot_source: SnapshotSource | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 15010,
        status_port: int | None = None,
        node_group: Callable[[Any], str] = client_kind,
        references: ReferenceExtractor = default_references,
        require_consistent: bool = True,
        debounce_after: float = DEBOUNCE_AFTER,
        debounce_max: float = DEBOUNCE_MAX,
        grpc_options: list[tuple[str, Any]] | None = None,
        security: ControlPlaneSecurity | None = None,
    ) -> None:
        self._source = snapshot_source
        self._security = security  # None: plaintext ADS; else mTLS, node ids bound to identities, CA (security/)
        self._host = host
        self._requested_port = port
        self._requested_status_port = status_port
        self._require_consistent = require_consistent
        self._grpc_options = grpc_options or []
        self.board = StatusBoard()
        self.cache = SnapshotCache(node_group, references=references, on_missing=self._on_missing)
        self.servicer = AggregatedDiscoveryService(
            self.cache, self.board, authorize=security.authorize if security is not None else None
        )
        self._debounce = (debounce_after, debounce_max)
        self._trigger: DebouncedTrigger | None = None
        self._server: grpc.aio.Server | None = None
        self._status_runner: web.AppRunner | None = None
        self._port: int | None = None
        self._status_port: int | None = None
        self._builds: set[asyncio.Task[None]] = set()
        self._status_extras: list[Callable[[], Mapping[str, Any]]] = [security.status] if security is not None else []

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        self._trigger = DebouncedTrigger(self._rebuild_all, quiet=self._debounce[0], max_delay=self._debounce[1])
        server = grpc.aio.server(options=self._grpc_options)
        self.servicer.add_to_server(server)
        if self._security is not None:
            await self._security.start()
            self._port = self._security.bind(server, self._host, self._requested_port)
        else:
            self._port = server.add_insecure_port(f"{self._host}:{self._requested_port}")
        await server.start()
        self._server = server
        if self._requested_status_port is not None:
            from meshlib.admin.host_check import host_check_middleware  # DNS rebinding: trusted Host only

            app = web.Application(middlewares=[host_check_middleware([self._host])])
            app.router.add_get("/status", self._status_handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, self._host, self._requested_status_port)
            await site.start()
            self._status_runner = runner
            self._status_port = runner.addresses[0][1]
        log.info("control plane serving ADS on %s", self.address)

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._trigger is not None:
            await self._trigger.close()
        for task in list(self._builds):
            task.cancel()
        if self._status_runner is not None:
            await self._status_runner.cleanup()
            self._status_runner = None
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._security is not None:
            await self._security.stop()

    @property
    def port(self) -> int:
        """The ADS port actually bound (useful with ``port=0``)."""
        if self._port is None:
            raise RuntimeError("the control plane is not started")
        return self._port

    @property
    def address(self) -> str:
        return f"{self._host}:{self.port}"

    @property
    def status_port(self) -> int | None:
        return self._status_port

    # -- publishing --------------------------------------------------------------

    def set_resources(self, group: str, resources: Resources) -> ResourceSnapshot:
        """Publish ``{type_url: {name: Message}}`` for ``group``; streams get what changed at once.

        Raises :class:`~meshlib.controlplane.cache.InconsistentSnapshot` (and
        publishes nothing) when a referenced RDS/EDS name is missing, unless the
        plane was built with ``require_consistent=False``.
        """
        return self.cache.set_resources(group, resources, require_consistent=self._require_consistent)

    def notify_changed(self) -> None:
        """A config source changed: rebuild every known group from ``snapshot_source``, debounced."""
        if self._trigger is None:
            raise RuntimeError("the control plane is not started")
        self._trigger.notify()

    async def _build(self, group: str) -> None:
        if self._source is None:
            return
        result = self._source(group)
        if inspect.isawaitable(result):
            result = await result
        if result is not None:
            self.set_resources(group, result)

    async def _rebuild_all(self) -> None:
        for group in self.cache.groups():
            try:
                await self._build(group)
            except Exception:
                log.exception("building resources for group %r failed; its previous snapshot stays", group)

    def _on_missing(self, group: str) -> None:
        if self._source is None:
            return
        task = asyncio.get_running_loop().create_task(self._build(group), name=f"meshlib-build-{group}")
        self._builds.add(task)
        task.add_done_callback(self._build_done)

    def _build_done(self, task: asyncio.Task[None]) -> None:
        self._builds.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("building the first snapshot failed", exc_info=task.exception())

    # -- status ------------------------------------------------------------------

    def add_status_extra(self, extra: Callable[[], Mapping[str, Any]]) -> None:
        """Merge ``extra()`` (JSON-ready keys, e.g. a config source's ``config_errors``) into :meth:`status`."""
        self._status_extras.append(extra)

    def status(self) -> dict[str, Any]:
        """JSON-ready status: streams (node, client, group, per type sent/ACKed/NACK) and cache versions."""
        versions: dict[str, Mapping[str, str]] = {}
        for group in self.cache.groups():
            snapshot = self.cache.snapshot(group)
            if snapshot is not None:
                versions[group] = {url: t.version for url, t in sorted(snapshot.types.items())}
        out = self.board.to_dict(versions)
        for extra in self._status_extras:
            out.update(extra())
        return out

    async def wait_until(self, predicate: Callable[[StatusBoard], bool]) -> None:
        """Await a condition over the connected streams (bound it with ``asyncio.timeout``)."""
        await self.board.wait_until(predicate)

    async def _status_handler(self, request: web.Request) -> web.Response:
        return web.json_response(self.status())
