"""Loopback ``grpc.aio`` servers with generic raw-bytes handlers that record what they received."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest_asyncio

HOST = "reviews.default.svc.cluster.local"
TARGET = f"{HOST}:50051"


@dataclass
class Call:
    method: str
    metadata: dict[str, str]
    time_remaining: float | None
    keys: tuple[str, ...] = ()  # every metadata key as received, duplicates kept


@dataclass
class GrpcBackend:
    """A server answering ``<name>:<request>``; ``fail`` makes Echo abort with UNAVAILABLE,
    ``hold`` makes Block wait for the event, ``arrived`` gets one item per call that reached a handler."""

    name: str
    port: int = 0
    calls: list[Call] = field(default_factory=list)
    fail: bool = False
    hold: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    @property
    def hits(self) -> int:
        return len(self.calls)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _record(self, method: str, context: grpc.aio.ServicerContext) -> None:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        keys = tuple(k for k, _ in context.invocation_metadata())
        self.calls.append(Call(method, metadata, context.time_remaining(), keys))
        self.arrived.put_nowait(method)

    async def echo(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._record("Echo", context)
        if self.fail:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} is failing")
        return self.name.encode() + b":" + request

    async def block(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._record("Block", context)
        await self.hold.wait()
        return self.name.encode()

    async def stream(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        self._record("Stream", context)
        for i in range(3):
            yield f"{self.name}:{i}".encode()

    async def chat(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        self._record("Chat", context)
        async for request in requests:
            yield self.name.encode() + b":" + request

    async def collect(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        self._record("Collect", context)
        parts = [r async for r in requests]
        return self.name.encode() + b":" + b",".join(parts)


def _handlers(backend: GrpcBackend) -> dict[str, Any]:
    return {
        "Echo": grpc.unary_unary_rpc_method_handler(backend.echo),
        "Block": grpc.unary_unary_rpc_method_handler(backend.block),
        "Stream": grpc.unary_stream_rpc_method_handler(backend.stream),
        "Chat": grpc.stream_stream_rpc_method_handler(backend.chat),
        "Collect": grpc.stream_unary_rpc_method_handler(backend.collect),
    }


GrpcBackendFactory = Callable[[str], Awaitable[GrpcBackend]]


@pytest_asyncio.fixture
async def grpc_backend() -> AsyncIterator[GrpcBackendFactory]:
    servers: list[tuple[grpc.aio.Server, GrpcBackend]] = []

    async def start(name: str) -> GrpcBackend:
        backend = GrpcBackend(name)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler("pkg.Svc", _handlers(backend)),
            grpc.method_handlers_generic_handler("pkg.Admin", _handlers(backend)),
        ])
        backend.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append((server, backend))
        return backend

    yield start
    for server, backend in servers:
        backend.hold.set()
        await server.stop(None)


def service_entry(endpoints: dict[str, GrpcBackend], *, dr_policy: str = "") -> str:
    eps = "\n".join(
        f"  - address: 127.0.0.1\n    ports: {{grpc: {b.port}}}\n    labels: {{app: reviews, version: {v}}}"
        for v, b in endpoints.items()
    )
    subsets = "\n".join(f"  - {{name: {v}, labels: {{version: {v}}}}}" for v in sorted(set(endpoints)))
    policy = f"  trafficPolicy:\n{dr_policy}\n" if dr_policy else ""
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 50051, name: grpc, protocol: GRPC}}
  endpoints:
{eps}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
{policy}  subsets:
{subsets}
"""


def write(path: Path, *docs: str) -> Path:
    path.write_text("\n---\n".join(docs))
    return path
