"""Loopback stub services registered in a test's mesh (the ``mesh_service`` fixture).

``await mesh_service("ratings", version="v1")`` starts an aiohttp server on
127.0.0.1, then writes (or extends) a ``ServiceEntry`` for
``ratings.<namespace>.svc.cluster.local`` into the mesh's generated-config
directory and waits for the mesh to load it — so the service is reached
through the mesh exactly as a real one: routing, subsets (``version`` is a
label), balancing, retries, faults. The mesh's own configuration (from
``mesh_config``) should route to these hosts but not declare ServiceEntries
for them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    import grpc.aio

    from meshlib.mesh import Mesh

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GrpcHandler = Callable[[bytes, "grpc.aio.ServicerContext"], Awaitable[bytes]]


@dataclass
class StubService:
    """One ``mesh_service`` call: its replicas' ``ip:port`` and the requests they received."""

    name: str
    host: str  # the FQDN the mesh knows it by
    port: int  # the service port (as in the ServiceEntry)
    labels: dict[str, str]
    endpoints: list[str] = field(default_factory=list)  # "127.0.0.1:<port>" per replica
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (endpoint, method, path)

    @property
    def hits(self) -> int:
        return len(self.requests)

    def hits_on(self, endpoint: str) -> int:
        return sum(1 for e, _, _ in self.requests if e == endpoint)

    @property
    def url(self) -> str:
        return f"http://{self.name}:{self.port}"


class MeshServices:
    """The ``mesh_service`` factory of one test; :meth:`close` stops every stub."""

    def __init__(self, mesh: Mesh, directory: Path, namespace: str = "default") -> None:
        self.mesh = mesh
        self.directory = directory
        self.namespace = namespace
        self._endpoints: dict[str, list[dict[str, Any]]] = {}
        self._ports: dict[str, tuple[int, str]] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []

    async def __call__(
        self, name: str, handler: Handler | None = None, *, version: str | None = None,
        labels: Mapping[str, str] | None = None, replicas: int = 1, port: int = 9080,
        grpc: Mapping[str, GrpcHandler] | None = None,
    ) -> StubService:
        """Start ``replicas`` stubs of ``name`` and register them; ``grpc`` maps method paths
        (``/pkg.Service/Method``) to ``async (request_bytes, context) -> reply_bytes`` for a gRPC stub.

        Without ``handler`` an HTTP stub answers JSON ``{"service", "version", "path"}``.
        """
        if not 1 <= replicas <= 64:
            raise ValueError(f"mesh_service replicas must be 1..64, got {replicas}")
        all_labels = {"app": name, **({"version": version} if version else {}), **dict(labels or {})}
        service = StubService(name, f"{name}.{self.namespace}.svc.cluster.local", port, all_labels)
        protocol = "GRPC" if grpc is not None else "HTTP"
        known = self._ports.setdefault(name, (port, protocol))
        if known != (port, protocol):
            raise ValueError(f"mesh_service {name!r} was registered on port {known[0]} ({known[1]}) already")
        for _ in range(replicas):
            if grpc is not None:
                bound = await self._start_grpc(service, grpc)
            else:
                bound = await self._start_http(service, handler)
            service.endpoints.append(f"127.0.0.1:{bound}")
            self._endpoints.setdefault(name, []).append(
                {"address": "127.0.0.1", "ports": {protocol.lower(): bound}, "labels": all_labels}
            )
        await self._register(name)
        return service

    async def _start_http(self, service: StubService, handler: Handler | None) -> int:
        bound = 0

        async def default(request: web.Request) -> web.StreamResponse:
            return web.json_response(
                {"service": service.name, "version": service.labels.get("version"), "path": request.path_qs}
            )

        inner = handler or default

        async def record(request: web.Request) -> web.StreamResponse:
            service.requests.append((f"127.0.0.1:{bound}", request.method, request.path_qs))
            return await inner(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        bound = runner.addresses[0][1]
        self._closers.append(runner.cleanup)
        return int(bound)

    async def _start_grpc(self, service: StubService, methods: Mapping[str, GrpcHandler]) -> int:
        import grpc
        import grpc.aio

        bound = 0

        def wrap(path: str, fn: GrpcHandler) -> Any:
            async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                service.requests.append((f"127.0.0.1:{bound}", "POST", path))
                return await fn(request, context)

            return grpc.unary_unary_rpc_method_handler(call)

        handlers: dict[str, dict[str, Any]] = {}
        for path, fn in methods.items():
            svc, _, method = path.strip("/").partition("/")
            handlers.setdefault(svc, {})[method] = wrap(path, fn)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            tuple(grpc.method_handlers_generic_handler(svc, table) for svc, table in handlers.items())
        )
        bound = int(server.add_insecure_port("127.0.0.1:0"))
        await server.start()

        async def stop() -> None:
            await server.stop(None)

        self._closers.append(stop)
        return bound

    async def _register(self, name: str) -> None:
        port, protocol = self._ports[name]
        entry = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": {"name": f"mesh-service-{name}", "namespace": self.namespace},
            "spec": {
                "hosts": [f"{name}.{self.namespace}.svc.cluster.local"],
                "location": "MESH_INTERNAL",
                "resolution": "STATIC",
                "ports": [{"number": port, "name": protocol.lower(), "protocol": protocol}],
                "endpoints": self._endpoints[name],
            },
        }
        before = self.mesh.reload_attempts
        path = self.directory / f"service-{name}.yaml"
        staged = path.with_suffix(".tmp")
        staged.write_text(json.dumps(entry, indent=1) + "\n")  # JSON is YAML
        staged.replace(path)  # atomic: the watcher never sees half a file
        await self.mesh.wait_for_reload(before, timeout_s=10.0)
        problems = self.mesh.status().get("last_error") or []
        if problems:
            raise RuntimeError(f"mesh_service {name!r}: the mesh rejected the generated ServiceEntry: {problems}")

    async def close(self) -> None:
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            await close()
