"""``MeshSyncClientInterceptor``: a sync channel called from an aio handler inherits its context."""

from __future__ import annotations

import asyncio
import doctest
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import meshlib
import meshlib.grpc.proxyless
import meshlib.grpc.server
import meshlib.grpc.sync
from meshlib.grpc.sync import MeshSyncClientInterceptor
from meshlib.resilience.deadline import deadline_scope
from meshlib.tracing.propagation import INBOUND_HEADERS
from tests.integration.grpc_server.test_server_interceptor import SERVICE, serve, serve_on_port

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.asyncio
async def test_sync_call_from_handler_carries_request_id_trace_and_deadline() -> None:
    mesh = meshlib.Mesh.from_files()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    mesh.enable_tracing(provider)
    seen: dict[str, Any] = {}

    async def backend(request: bytes, context: Any) -> bytes:
        seen["metadata"] = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        seen["time_remaining"] = context.time_remaining()
        return b"backend"

    async with serve_on_port({"Backend": backend}) as (_, port):
        target = f"127.0.0.1:{port}"
        sync_channel = grpc.intercept_channel(grpc.insecure_channel(target), MeshSyncClientInterceptor(mesh))
        stub = sync_channel.unary_unary(f"/{SERVICE}/Backend")

        async def front(request: bytes, context: Any) -> bytes:
            reply: bytes = await asyncio.to_thread(stub, b"x")  # to_thread copies the context
            return reply

        try:
            async with serve({"Front": front}, [mesh.grpc_server_interceptor()]) as channel:
                metadata = (("x-request-id", "sync-1"), ("traceparent", TRACEPARENT))
                assert await channel.unary_unary(f"/{SERVICE}/Front")(b"x", timeout=5, metadata=metadata) == b"backend"
        finally:
            sync_channel.close()

    assert seen["metadata"]["x-request-id"] == "sync-1"
    # The trace context written is the SERVER span's: same trace, the server span as parent.
    mesh.flush_telemetry()  # telemetry is finished after the response, in batches
    server_span = next(s for s in exporter.get_finished_spans() if s.name == f"{SERVICE}/Front")
    trace_id, parent_id = seen["metadata"]["traceparent"].split("-")[1:3]
    assert trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert parent_id == format(server_span.context.span_id, "016x")
    # The caller's 5 s deadline, carried on (less the time spent); gRPC's clocks round a few ms either way.
    assert 2.0 < seen["time_remaining"] <= 5.05


@pytest.mark.asyncio
async def test_expired_deadline_fails_locally_and_outside_a_request_nothing_changes() -> None:
    calls: list[dict[str, str]] = []

    async def backend(request: bytes, context: Any) -> bytes:
        calls.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        return b"backend"

    async with serve_on_port({"Backend": backend}) as (_, port):
        target = f"127.0.0.1:{port}"
        sync_channel = grpc.intercept_channel(grpc.insecure_channel(target), MeshSyncClientInterceptor())
        stub = sync_channel.unary_unary(f"/{SERVICE}/Backend")
        try:
            # Outside any inbound request: sent untouched.
            assert await asyncio.to_thread(stub, b"x") == b"backend"
            assert "x-request-id" not in calls[-1]

            def expired_call() -> None:
                token = INBOUND_HEADERS.set((("x-request-id", "late"),))
                try:
                    with deadline_scope(0.0):  # monotonic 0: long past
                        stub(b"x")
                finally:
                    INBOUND_HEADERS.reset(token)

            with pytest.raises(grpc.RpcError) as failed:
                await asyncio.to_thread(expired_call)
            assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
            assert len(calls) == 1  # nothing was sent
        finally:
            sync_channel.close()


@pytest.mark.parametrize("module", [meshlib.grpc.server, meshlib.grpc.proxyless, meshlib.grpc.sync])
def test_docstring_examples(module: Any) -> None:
    result = doctest.testmod(module)
    assert result.attempted >= 1 and result.failed == 0
