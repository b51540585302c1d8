"""Registering this process with the local Consul agent (``mesh.register``).

::

    handle = await mesh.register("web", 8080, address="10.0.0.7", tags=("v2",), check=TtlCheck("10s"))
    ...
    await handle.deregister()

The registration goes through py-consul's ``agent.service.register`` with a
check built by py-consul's ``Check`` helpers: :class:`HttpCheck` (the agent
polls the service), :class:`GrpcCheck` (the agent calls gRPC health) or
:class:`TtlCheck` (this process reports: a keep-alive task marks the check
passing every ``ttl/3`` until :meth:`Registration.deregister`). Every check
carries ``DeregisterCriticalServiceAfter`` (default one minute), so a process
that crashes without deregistering is removed by the agent once its check has
been critical that long.

For servers: :func:`meshlib.aiohttp.consul.consul_registration` (on startup /
on cleanup) and :func:`meshlib.grpc.consul.consul_grpc_registration` (an async
context manager).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import consul  # type: ignore[import-untyped]

from meshlib.config.durations import parse_duration
from meshlib.discovery.consul.client import ConsulClient, ConsulError, ConsulSettings

if TYPE_CHECKING:
    from meshlib.mesh import Mesh

__all__ = ["GrpcCheck", "HttpCheck", "Registration", "TtlCheck", "register_service"]

log = logging.getLogger("meshlib.consul")

DEFAULT_DEREGISTER_AFTER = "1m"


def _seconds(text: str, what: str) -> float:
    seconds = parse_duration(text)
    if seconds is None or seconds <= 0:
        raise ValueError(f"{what}: {text!r} is not a positive Go duration (e.g. '10s', '500ms', '1m')")
    return seconds


@dataclass(frozen=True, slots=True)
class HttpCheck:
    """The agent GETs ``http://ADDRESS:PORT{path}`` (or ``url``) every ``interval``; 2xx passes, 429 warns."""

    path: str = "/health"
    interval: str = "10s"
    timeout: str = "5s"
    url: str | None = None
    deregister_after: str = DEFAULT_DEREGISTER_AFTER

    def definition(self, address: str, port: int) -> dict[str, Any]:
        _seconds(self.interval, "HttpCheck.interval")
        url = self.url or f"http://{_url_host(address)}:{port}{self.path}"
        return dict(consul.Check.http(url, self.interval, timeout=self.timeout, deregister=self.deregister_after))


@dataclass(frozen=True, slots=True)
class GrpcCheck:
    """The agent calls ``grpc.health.v1.Health/Check`` on ``ADDRESS:PORT[/service]`` every ``interval``."""

    service: str = ""
    interval: str = "10s"
    timeout: str = "5s"
    use_tls: bool = False
    deregister_after: str = DEFAULT_DEREGISTER_AFTER

    def definition(self, address: str, port: int) -> dict[str, Any]:
        _seconds(self.interval, "GrpcCheck.interval")
        target = f"{_url_host(address)}:{port}" + (f"/{self.service}" if self.service else "")
        return dict(
            consul.Check.grpc(
                target, self.interval, use_tls=self.use_tls, timeout=self.timeout, deregister=self.deregister_after
            )
        )


@dataclass(frozen=True, slots=True)
class TtlCheck:
    """This process reports its own health: passing every ``heartbeat_s`` (default ``ttl/3``).

    If the process stops reporting, the check turns critical after ``ttl`` and
    the agent removes the instance ``deregister_after`` later.
    """

    ttl: str = "10s"
    deregister_after: str = DEFAULT_DEREGISTER_AFTER
    heartbeat_s: float | None = None

    @property
    def interval_s(self) -> float:
        ttl_s = _seconds(self.ttl, "TtlCheck.ttl")
        return self.heartbeat_s if self.heartbeat_s is not None else ttl_s / 3

    def definition(self, address: str, port: int) -> dict[str, Any]:
        _seconds(self.ttl, "TtlCheck.ttl")
        check = dict(consul.Check.ttl(self.ttl))
        check["DeregisterCriticalServiceAfter"] = self.deregister_after
        return check


Check = HttpCheck | GrpcCheck | TtlCheck


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


class Registration:
    """A registered service instance; :meth:`deregister` (idempotent) removes it and stops the keep-alive."""

    def __init__(self, client: ConsulClient, service_id: str, check_id: str | None, *, owns_client: bool) -> None:
        self.client = client
        self.service_id = service_id
        self.check_id = check_id
        self.heartbeats = 0
        self.last_heartbeat_error: str | None = None
        self.deregistered = False
        self._owns_client = owns_client
        self._keepalive: asyncio.Task[None] | None = None
        self._beat = asyncio.Condition()

    def _start_keepalive(self, interval_s: float) -> None:
        self._keepalive = asyncio.get_running_loop().create_task(
            self._keep_alive(interval_s), name=f"meshlib-consul-ttl {self.service_id}"
        )

    async def _keep_alive(self, interval_s: float) -> None:
        assert self.check_id is not None
        while True:
            try:
                await self.client.ttl_pass(self.check_id, "meshlib keep-alive")
            except ConsulError as exc:
                # Try again sooner: missing one beat is fine, missing the TTL is not.
                self.last_heartbeat_error = str(exc)
                log.warning("consul TTL keep-alive for %s failed: %s", self.service_id, exc)
                await asyncio.sleep(max(0.05, interval_s / 3))
                continue
            self.last_heartbeat_error = None
            await self._count_beat()
            await asyncio.sleep(interval_s)

    async def _count_beat(self) -> None:
        async with self._beat:
            self.heartbeats += 1
            self._beat.notify_all()

    async def wait_for_heartbeats(self, count: int, timeout_s: float = 10.0) -> None:
        """Wait until ``count`` TTL keep-alives have succeeded in total."""
        async with asyncio.timeout(timeout_s), self._beat:
            await self._beat.wait_for(lambda: self.heartbeats >= count)

    async def deregister(self) -> None:
        """Stop the keep-alive and remove the instance from the agent."""
        if self.deregistered:
            return
        self.deregistered = True
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
        try:
            await self.client.deregister_service(self.service_id)
        finally:
            if self._owns_client:
                await self.client.close()

    async def __aenter__(self) -> Registration:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.deregister()


def _mesh_source(mesh: Mesh | None) -> Any:
    return getattr(mesh, "_consul_source", None) if mesh is not None else None


def _client_for(mesh: Mesh | None) -> tuple[ConsulClient, bool]:
    source = _mesh_source(mesh)
    if source is not None:
        client: ConsulClient = source.client
        return client, False
    return ConsulClient(ConsulSettings.resolve()), True


async def register_service(
    mesh: Mesh | None,
    name: str,
    port: int,
    *,
    id: str | None = None,
    address: str | None = None,
    tags: Sequence[str] = (),
    meta: Mapping[str, str] | None = None,
    check: Check | None = None,
    weights: Mapping[str, int] | None = None,
    client: ConsulClient | None = None,
) -> Registration:
    """Register ``name`` at ``port`` with the agent; returns the :class:`Registration` handle.

    ``id`` defaults to ``NAME-HOSTNAME-PORT`` (unique per process and port);
    a registration made through a ``Mesh.from_consul`` mesh's own client is also
    deregistered when that mesh stops;
    ``address`` to the agent's address; ``check`` to a 10 s :class:`TtlCheck`
    kept alive by this process (``check=None`` still gets that default; pass an
    :class:`HttpCheck` to let the agent poll). ``client`` overrides the Consul
    client (default: the mesh's own when built with ``Mesh.from_consul``, else
    one from ``CONSUL_HTTP_ADDR``).
    """
    if not name:
        raise ValueError("a service name is required")
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not in 1..65535")
    owns = False
    if client is None:
        client, owns = _client_for(mesh)
    service_id = id or f"{name}-{socket.gethostname()}-{port}"
    check = check if check is not None else TtlCheck()
    definition = check.definition(address or "127.0.0.1", port)
    check_id = f"service:{service_id}"
    definition["CheckID"] = check_id
    if isinstance(check, TtlCheck):
        definition["Status"] = "critical"  # until the first keep-alive, as Consul starts every TTL check
    try:
        await client.register_service(
            name=name,
            service_id=service_id,
            address=address,
            port=port,
            tags=list(tags) or None,
            meta=dict(meta) if meta else None,
            check=definition,
            weights=dict(weights) if weights else None,
        )
    except BaseException:
        if owns:
            await client.close()
        raise
    registration = Registration(client, service_id, check_id, owns_client=owns)
    if isinstance(check, TtlCheck):
        try:
            await client.ttl_pass(check_id, "meshlib: registered")
            await registration._count_beat()
        except ConsulError as exc:
            registration.last_heartbeat_error = str(exc)
        registration._start_keepalive(check.interval_s)
    source = _mesh_source(mesh)
    if source is not None and client is source.client:
        source.registrations.append(registration)  # deregistered when the mesh stops
    log.info("consul: registered %s (%s) on port %d", service_id, name, port)
    return registration
