"""``ConsulEmulator``: the aiohttp app, its lifecycle, and the test controls.

See the package docstring (``meshlib.testing.consul``) for what is emulated.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from meshlib.testing.consul.acl import AclDenied, AclPolicy
from meshlib.testing.consul.agent import LocalAgent
from meshlib.testing.consul.checks import CheckRunner, Clock
from meshlib.testing.consul.controls import CatalogControls
from meshlib.testing.consul.http_query import (
    HttpProblem,
    QueryOptions,
    blocking_query,
    json_response,
    parse_query,
    request_token,
    text_response,
)
from meshlib.testing.consul.routes_agent import AgentRoutes
from meshlib.testing.consul.routes_catalog import CatalogRoutes
from meshlib.testing.consul.routes_health import HealthRoutes
from meshlib.testing.consul.state import CatalogStore


@dataclass
class FaultState:
    """What the emulator is currently breaking (see :meth:`ConsulEmulator.go_down`)."""

    leader: bool = True
    down_since: float | None = None
    refused: bool = False
    error_status: int | None = None
    error_body: str = ""
    latency: float = 0.0
    hanging: asyncio.Event | None = None  # set: requests are held (accepted, never answered) until come_back()


@dataclass(frozen=True)
class RequestRecord:
    method: str
    route: str
    path: str
    query: str
    status: int
    blocking: bool


class ConsulEmulator(CatalogControls):
    """An in-process Consul agent + server for tests, speaking Consul's HTTP API.

    >>> async def demo() -> None:                                  # doctest: +SKIP
    ...     async with ConsulEmulator() as consul:                 # listens on 127.0.0.1:<free port>
    ...         consul.add_service("web", 8080, tags=["v1"])
    ...         print(consul.address)                              # → CONSUL_HTTP_ADDR
    """

    def __init__(
        self,
        *,
        datacenter: str = "dc1",
        datacenters: tuple[str, ...] = (),
        node: str = "consul-emulator",
        node_address: str = "127.0.0.1",
        clock: Clock | None = None,
        rng: random.Random | None = None,
        check_interval: float | None = None,
        initial_check_delay: float = 0.0,
        reap_interval: float = 30.0,
        deregister_minimum: float = 60.0,
        version: str = "1.21.0",
        locality: dict[str, str] | None = None,
        request_log_size: int = 10000,
    ) -> None:
        self.local_dc = datacenter
        self.stores: dict[str, CatalogStore] = {dc: CatalogStore(dc) for dc in (datacenter, *datacenters)}
        self.clock: Clock = clock or time.monotonic
        self.rng = rng or random.Random()
        self.version = version
        self.acl = AclPolicy()
        self.faults = FaultState()
        self.leader_address = "127.0.0.1:8300"
        self.unreachable_datacenters: set[str] = set()  # answered like a WAN partition: "No path to datacenter"
        self.runner = CheckRunner(
            self.local_store, clock=self.clock, deregister=self._reap, interval_override=check_interval,
            initial_delay=initial_check_delay, reap_interval=reap_interval, deregister_minimum=deregister_minimum,
        )
        self.agent = LocalAgent(self.local_store, self.runner, node=node, address=node_address)
        self.agent.locality = dict(locality) if locality else None
        self.agent.ensure_node()
        self.request_counts: collections.Counter[str] = collections.Counter()
        self.requests: collections.deque[RequestRecord] = collections.deque(maxlen=request_log_size)
        self.blocked = 0  # blocking queries parked right now
        self._blocked_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._stopping = False
        self._ssl: ssl.SSLContext | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.host = "127.0.0.1"
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def local_store(self) -> CatalogStore:
        return self.stores[self.local_dc]

    @property
    def address(self) -> str:
        """``host:port`` — what ``CONSUL_HTTP_ADDR`` should hold."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://host:port``, or ``https://`` when started with an SSL context."""
        return f"{'https' if self._ssl is not None else 'http'}://{self.address}"

    def make_app(self) -> web.Application:
        from meshlib.testing.consul.control import ControlRoutes

        app = web.Application(middlewares=[self._middleware], client_max_size=1 << 20)
        app.add_routes(HealthRoutes(self).routes())
        app.add_routes(CatalogRoutes(self).routes())
        app.add_routes(AgentRoutes(self).routes())
        app.add_routes(ControlRoutes(self).routes())
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0, *,
                    ssl_context: ssl.SSLContext | None = None) -> str:
        """Listen on ``host:port`` (0 = a free port); returns :attr:`address`.

        With ``ssl_context`` (a server context: ``load_cert_chain``, optionally
        ``verify_mode = CERT_REQUIRED`` for client certificates) it serves HTTPS,
        as an agent with ``tls { https { … } }`` does.
        """
        self._stopping = False
        self._ssl = ssl_context
        self._runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await self._site.start()
        server = self._site._server  # the bound port when port=0
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.host, self.port = host, sockets[0].getsockname()[1] if sockets else port
        self.runner.start()
        return self.address

    async def stop(self) -> None:
        """Stop serving; parked blocking queries are answered at once (with their current data)."""
        self._stopping = True
        if self.faults.hanging is not None:
            self.faults.hanging.set()
        for store in self.stores.values():
            store.wake_all()
        await self.runner.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    async def __aenter__(self) -> ConsulEmulator:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- request plumbing (used by the route classes) ----------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        resource = request.match_info.route.resource
        # Unmatched paths share one key, so random URLs cannot grow the counter without bound.
        route = f"{request.method} {resource.canonical if resource is not None else '<unmatched>'}"
        is_api = request.path.startswith("/v1/")
        if is_api:
            self.request_counts[route] += 1
        blocking = "index" in request.query and request.query["index"] not in ("", "0")
        try:
            if is_api:
                if self.faults.hanging is not None:
                    await self.faults.hanging.wait()
                if self.faults.latency:
                    await asyncio.sleep(self.faults.latency)
                if self.faults.error_status is not None:
                    raise HttpProblem(self.faults.error_status, self.faults.error_body)
            response = await handler(request)
        except HttpProblem as exc:
            response = text_response(exc.status, exc.text)
        except AclDenied as exc:
            response = text_response(403, str(exc))
        except web.HTTPException as exc:
            response = text_response(exc.status, exc.text or exc.reason)
        if is_api:
            self.requests.append(RequestRecord(request.method, route, request.path, request.query_string,
                                               response.status, blocking))
        return response

    def store(self, datacenter: str) -> CatalogStore:
        store = self.stores.get(datacenter)
        if store is None or datacenter in self.unreachable_datacenters:
            raise HttpProblem(500, "No path to datacenter")
        return store

    def token_of(self, request: web.Request) -> str:
        return request_token(request)

    def check_leader(self, options: QueryOptions | None) -> None:
        if not self.faults.leader and (options is None or options.consistency != "stale"):
            raise HttpProblem(500, "No cluster leader")

    def query_context(self, request: web.Request) -> tuple[QueryOptions, CatalogStore]:
        options = parse_query(request, self.local_dc)
        self.check_leader(options)
        return options, self.store(options.datacenter)

    async def run_query(self, store: CatalogStore, options: QueryOptions, topics: list[str],
                        compute: Callable[[], tuple[int, Any]]) -> tuple[int, Any]:
        return await blocking_query(store, options, topics, compute, rng=self.rng,
                                    stop=self._release_parked,
                                    parked=self._note_parked)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` began, or while the listener is refused / answering errors."""
        return self._release_parked()

    def _release_parked(self) -> bool:
        return self._stopping or self.faults.refused or self.faults.error_status is not None

    def _note_parked(self, delta: int) -> None:
        self.blocked += delta
        still_waiting = []
        for wanted, future in self._blocked_waiters:
            if future.done():
                continue
            if self.blocked >= wanted:
                future.set_result(None)
            else:
                still_waiting.append((wanted, future))
        self._blocked_waiters = still_waiting

    def query_response(self, body: Any, index: int, options: QueryOptions,
                       headers: dict[str, str] | None = None) -> web.Response:
        contact = 0
        if not self.faults.leader and self.faults.down_since is not None:
            contact = int((time.monotonic() - self.faults.down_since) * 1000)
        return json_response(body, index=index, options=options, known_leader=self.faults.leader,
                             last_contact_ms=contact, headers=headers)

    def _reap(self, service_id: str) -> None:
        self.agent.reap(service_id)

    # -- discovery chain (delegated to meshlib's compiler when it is installed) ---------------------------

    def chain_problem(self, store: CatalogStore, entry: dict[str, Any]) -> str | None:
        from meshlib.testing.consul import chain_bridge

        return chain_bridge.write_time_problem(store, entry)

    def render_chain(self, store: CatalogStore, service: str, compile_dc: str,
                     overrides: dict[str, Any]) -> dict[str, Any]:
        from meshlib.testing.consul import chain_bridge

        return chain_bridge.render(store, service, compile_dc, overrides)

    # -- test controls: faults -------------------------------------------------------------------------

    async def go_down(self, mode: str = "refuse", *, status: int = 500, body: str = "") -> None:
        """Start an outage.

        - ``"refuse"``: the listener is closed and open connections are dropped (connection refused);
        - ``"no-leader"``: server writes and non-stale reads answer 500 ``No cluster leader``; ``?stale``
          reads still work with ``X-Consul-KnownLeader: false`` and a growing ``X-Consul-LastContact``;
          the agent API still accepts registrations;
        - ``"hang"``: connections are accepted but ``/v1`` requests get no answer until
          :meth:`come_back` (a black hole: exercises client timeouts);
        - ``"error"``: every ``/v1`` request answers ``status`` with ``body``.
        """
        if mode == "refuse":
            self.faults.refused = True
            self._wake_all()
            if self._runner is not None and self._site is not None:
                for handler in list(self._runner.server.connections if self._runner.server else []):
                    handler.force_close()
                await self._site.stop()
        elif mode == "no-leader":
            self.faults.leader = False
            self.faults.down_since = time.monotonic()
        elif mode == "hang":
            self.faults.hanging = asyncio.Event()
        elif mode == "error":
            self.faults.error_status, self.faults.error_body = status, body or "rpc error making call: EOF"
            self._wake_all()
        else:
            raise ValueError("mode must be 'refuse', 'no-leader', 'hang' or 'error'")

    async def come_back(self) -> None:
        """End every outage; a refused listener is re-opened on the same port."""
        if self.faults.refused and self._runner is not None:
            self._site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl)
            await self._site.start()
        self.faults.refused = False
        if self.faults.hanging is not None:
            self.faults.hanging.set()
            self.faults.hanging = None
        self.faults.leader = True
        self.faults.down_since = None
        self.faults.error_status = None

    @contextlib.asynccontextmanager
    async def down(self, mode: str = "refuse", **kwargs: Any) -> AsyncIterator[None]:
        await self.go_down(mode, **kwargs)
        try:
            yield
        finally:
            await self.come_back()

    def set_datacenter_reachable(self, datacenter: str, reachable: bool) -> None:
        """Cut (or restore) the path to a remote datacenter: ``?dc=`` queries answer 500 ``No path to datacenter``."""
        if datacenter == self.local_dc:
            raise ValueError("the local datacenter is always reachable; use go_down() for an outage")
        if reachable:
            self.unreachable_datacenters.discard(datacenter)
        else:
            self.unreachable_datacenters.add(datacenter)

    def set_latency(self, seconds: float) -> None:
        """Delay every ``/v1`` answer by ``seconds``."""
        self.faults.latency = max(0.0, seconds)

    def _wake_all(self) -> None:
        for store in self.stores.values():
            store.wake_all()

    def count(self, route_prefix: str = "") -> int:
        """Requests received whose ``"METHOD /route"`` key starts with ``route_prefix``."""
        return sum(n for key, n in self.request_counts.items() if key.startswith(route_prefix)
                   or key.split(" ", 1)[1].startswith(route_prefix))

    def reset_counts(self) -> None:
        self.request_counts.clear()
        self.requests.clear()

    async def wait_blocked(self, count: int = 1, *, within: float = 5.0) -> None:
        """Wait until at least ``count`` blocking queries are parked (no sleeps in tests)."""
        if self.blocked >= count:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._blocked_waiters.append((count, future))
        try:
            await asyncio.wait_for(future, within)
        except TimeoutError:
            raise TimeoutError(f"{self.blocked} blocked queries, wanted {count}") from None
