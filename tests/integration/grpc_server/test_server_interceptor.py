"""``MeshServerInterceptor`` and ``@mesh_servicer_method`` on real ``grpc.aio`` servers on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import meshlib
from meshlib.config.model import FaultPolicy
from meshlib.grpc.server import InboundPolicy, MeshServerInterceptor, mesh_servicer_method
from meshlib.resilience.deadline import current_deadline
from meshlib.resilience.ratelimit import LocalRateLimit
from meshlib.tracing.propagation import INBOUND_HEADERS
from meshlib.tracing.record import InboundRecord, OutboundRecord

pytestmark = pytest.mark.asyncio

SERVICE = "test.Echo"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

Behavior = Callable[[bytes, Any], Awaitable[bytes]]


class Sink:
    def __init__(self) -> None:
        self.inbound_records: list[InboundRecord] = []

    def outbound(self, record: OutboundRecord) -> None:
        pass

    def inbound(self, record: InboundRecord) -> None:
        self.inbound_records.append(record)


@asynccontextmanager
async def serve(
    methods: dict[str, Any], interceptors: list[Any] | None = None, *, streaming: frozenset[str] = frozenset()
) -> AsyncIterator[grpc.aio.Channel]:
    """A grpc.aio server with ``methods`` of ``test.Echo``, and a channel to it."""
    async with serve_on_port(methods, interceptors, streaming=streaming) as (channel, _):
        yield channel


@asynccontextmanager
async def serve_on_port(
    methods: dict[str, Any], interceptors: list[Any] | None = None, *, streaming: frozenset[str] = frozenset()
) -> AsyncIterator[tuple[grpc.aio.Channel, int]]:
    """:func:`serve`, also giving the server's port."""
    handlers = {
        name: grpc.unary_stream_rpc_method_handler(fn) if name in streaming else grpc.unary_unary_rpc_method_handler(fn)
        for name, fn in methods.items()
    }
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel, port
    finally:
        await server.stop(None)


def mesh() -> meshlib.Mesh:
    return meshlib.Mesh.from_files()


async def test_handler_sees_inbound_deadline_and_propagation_headers() -> None:
    m = mesh()
    seen: dict[str, Any] = {}

    async def handler(request: bytes, context: Any) -> bytes:
        seen["deadline_left"] = (current_deadline() or 0.0) - m.clock()
        seen["headers"] = dict(INBOUND_HEADERS.get())
        # A task spawned by the handler (a fan-out) inherits both.
        seen["in_task"] = await asyncio.create_task(_read_context())
        return b"ok"

    async with serve({"Get": handler}, [m.grpc_server_interceptor()]) as channel:
        call = channel.unary_unary(f"/{SERVICE}/Get")
        metadata = (("x-request-id", "rid-1"), ("traceparent", TRACEPARENT))
        assert await call(b"x", timeout=7.0, metadata=metadata) == b"ok"
        # The 7 s budget minus connection set-up and transit; gRPC sends the timeout rounded up to its
        # wire unit, so the server may see a few ms more than the client asked for.
        assert 2.0 < seen["deadline_left"] <= 7.05
        assert seen["headers"]["x-request-id"] == "rid-1"
        assert seen["headers"]["traceparent"] == TRACEPARENT
        assert seen["in_task"][1]["x-request-id"] == "rid-1"
        assert seen["in_task"][0] is not None

        # No deadline, no request id: no deadline scope, a generated request id.
        assert await call(b"x") == b"ok"
        assert seen["deadline_left"] < 0  # current_deadline() was None
        assert seen["headers"]["x-request-id"]
        assert "traceparent" not in seen["headers"]
    # Outside the call, nothing leaks.
    assert current_deadline() is None and INBOUND_HEADERS.get() == ()


async def _read_context() -> tuple[float | None, dict[str, str]]:
    return current_deadline(), dict(INBOUND_HEADERS.get())


async def test_envoy_expected_timeout_header_is_a_fallback_deadline() -> None:
    m = mesh()
    seen: list[float | None] = []

    async def handler(request: bytes, context: Any) -> bytes:
        seen.append(current_deadline())
        return b"ok"

    async with serve({"Get": handler}, [m.grpc_server_interceptor()]) as channel:
        before = m.clock()
        await channel.unary_unary(f"/{SERVICE}/Get")(b"x", metadata=(("x-envoy-expected-rq-timeout-ms", "3000"),))
    assert seen[0] is not None and 2.5 < seen[0] - before <= 3.5


async def test_server_span_and_inbound_record_cover_the_real_handler() -> None:
    m = mesh()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    m.enable_tracing(provider)
    sink = Sink()
    m.add_telemetry_sink(sink)
    work_s = 0.1

    async def handler(request: bytes, context: Any) -> bytes:
        await asyncio.sleep(work_s)  # the handler's own work, which the timing must include
        return b"ok"

    async def failing(request: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.INTERNAL, "boom")
        raise AssertionError("not reached")

    async with serve({"Get": handler, "Fail": failing}, [m.grpc_server_interceptor()]) as channel:
        started = time.perf_counter()
        await channel.unary_unary(f"/{SERVICE}/Get")(b"x", metadata=(("traceparent", TRACEPARENT),))
        elapsed = time.perf_counter() - started
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await channel.unary_unary(f"/{SERVICE}/Fail")(b"x")
        assert failed.value.code() == grpc.StatusCode.INTERNAL

    m.flush_telemetry()  # telemetry is finished after the response, in batches
    spans = {s.name: s for s in exporter.get_finished_spans()}
    ok = spans[f"{SERVICE}/Get"]
    assert ok.kind == SpanKind.SERVER
    assert ok.attributes is not None
    assert ok.attributes["rpc.system.name"] == "grpc"
    assert ok.attributes["rpc.method"] == f"{SERVICE}/Get"
    assert ok.attributes["rpc.response.status_code"] == "OK"
    assert ok.attributes["client.address"] == "127.0.0.1"
    assert format(ok.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert ok.parent is not None and format(ok.parent.span_id, "016x") == "b7ad6b7169203331"
    assert ok.end_time is not None and ok.start_time is not None
    assert work_s <= (ok.end_time - ok.start_time) / 1e9 <= elapsed
    bad = spans[f"{SERVICE}/Fail"]
    assert bad.attributes is not None and bad.attributes["rpc.response.status_code"] == "INTERNAL"
    assert bad.attributes["error.type"] == "INTERNAL"

    m.flush_telemetry()  # telemetry is finished after the response, in batches
    by_path = {r.path: r for r in sink.inbound_records}
    record = by_path[f"/{SERVICE}/Get"]
    assert work_s <= record.duration_s <= elapsed
    assert (record.method, record.status, record.grpc_status, record.response_flags) == ("POST", 200, 0, "-")
    assert record.request_id and record.source_address == "127.0.0.1"
    assert by_path[f"/{SERVICE}/Fail"].grpc_status == grpc.StatusCode.INTERNAL.value[0]


async def test_rate_limit_rejects_over_the_budget() -> None:
    now = [100.0]
    m = meshlib.Mesh.from_files(clock=lambda: now[0])
    sink = Sink()
    m.add_telemetry_sink(sink)
    ran: list[int] = []

    async def handler(request: bytes, context: Any) -> bytes:
        ran.append(1)
        return b"ok"

    limit = LocalRateLimit(max_tokens=3, tokens_per_fill=3, fill_interval_s=1.0)
    interceptor = m.grpc_server_interceptor(rate_limit=limit, rate_limited_status=grpc.StatusCode.RESOURCE_EXHAUSTED)
    async with serve({"Get": handler}, [interceptor]) as channel:
        call = channel.unary_unary(f"/{SERVICE}/Get")
        codes = []
        for _ in range(5):
            try:
                await call(b"x")
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
        assert codes == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
        assert len(ran) == 3
        now[0] += 1.0  # one fill interval later the bucket is full again
        assert await call(b"x") == b"ok"
    m.flush_telemetry()  # telemetry is finished after the response, in batches
    assert [r.response_flags for r in sink.inbound_records] == ["-", "-", "-", "RL", "RL", "-"]


async def test_fault_abort_answers_the_status_without_running_the_handler() -> None:
    m = mesh()
    ran: list[int] = []

    async def handler(request: bytes, context: Any) -> bytes:
        ran.append(1)
        return b"ok"

    fault = FaultPolicy(abort_grpc_status=grpc.StatusCode.PERMISSION_DENIED.value[0], abort_percent=100)
    async with serve({"Get": handler}, [MeshServerInterceptor(m, InboundPolicy(fault=fault))]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as aborted:
            await channel.unary_unary(f"/{SERVICE}/Get")(b"x")
    assert aborted.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert aborted.value.details() == "fault filter abort"
    assert ran == []


async def test_fault_delay_then_handler_and_http_abort_mapping() -> None:
    m = mesh()
    sink = Sink()
    m.add_telemetry_sink(sink)

    async def handler(request: bytes, context: Any) -> bytes:
        return b"ok"

    delay = m.grpc_server_interceptor(fault=FaultPolicy(delay_s=0.05, delay_percent=100))
    async with serve({"Get": handler}, [delay]) as channel:
        started = time.perf_counter()
        assert await channel.unary_unary(f"/{SERVICE}/Get")(b"x") == b"ok"
        assert time.perf_counter() - started >= 0.05
    m.flush_telemetry()  # telemetry is finished after the response, in batches
    assert sink.inbound_records[-1].response_flags == "DI"

    http_abort = m.grpc_server_interceptor(fault=FaultPolicy(abort_http_status=503, abort_percent=100))
    async with serve({"Get": handler}, [http_abort]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as aborted:
            await channel.unary_unary(f"/{SERVICE}/Get")(b"x")
    assert aborted.value.code() == grpc.StatusCode.UNAVAILABLE
    m.flush_telemetry()  # telemetry is finished after the response, in batches
    assert sink.inbound_records[-1].response_flags == "FI"


async def test_streaming_response_keeps_context_until_the_last_message() -> None:
    m = mesh()
    sink = Sink()
    m.add_telemetry_sink(sink)

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for _ in range(3):
            yield dict(INBOUND_HEADERS.get())["x-request-id"].encode()

    async with serve({"Watch": stream}, [m.grpc_server_interceptor()], streaming=frozenset({"Watch"})) as channel:
        call = channel.unary_stream(f"/{SERVICE}/Watch")(b"x", metadata=(("x-request-id", "stream-1"),))
        assert [m async for m in call] == [b"stream-1"] * 3
    m.flush_telemetry()  # telemetry is finished after the response, in batches
    assert [(r.path, r.grpc_status) for r in sink.inbound_records] == [(f"/{SERVICE}/Watch", 0)]


async def test_decorator_without_interceptor() -> None:
    m = mesh()
    sink = Sink()
    m.add_telemetry_sink(sink)
    ran: list[int] = []

    class Servicer:
        @mesh_servicer_method(m, method=f"/{SERVICE}/Get")
        async def Get(self, request: bytes, context: Any) -> bytes:
            ran.append(1)
            return f"{dict(INBOUND_HEADERS.get())['x-request-id']} {current_deadline() is not None}".encode()

        @mesh_servicer_method(m, policy=InboundPolicy(fault=FaultPolicy(abort_grpc_status=8, abort_percent=100)))
        async def Limited(self, request: bytes, context: Any) -> bytes:
            ran.append(2)
            return b"never"

    servicer = Servicer()
    async with serve({"Get": servicer.Get, "Limited": servicer.Limited}) as channel:
        reply = await channel.unary_unary(f"/{SERVICE}/Get")(b"x", timeout=5, metadata=(("x-request-id", "d-1"),))
        assert reply == b"d-1 True"
        with pytest.raises(grpc.aio.AioRpcError) as aborted:
            await channel.unary_unary(f"/{SERVICE}/Limited")(b"x")
    assert aborted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ran == [1]
    # Without method=, the RPC is named after the function's qualified name.
    limited = "/test_decorator_without_interceptor/<locals>/Servicer/Limited"
    m.flush_telemetry()  # telemetry is finished after the response, in batches
    assert [r.path for r in sink.inbound_records] == [f"/{SERVICE}/Get", limited]


async def test_inbound_grpc_calls_reach_istio_metrics() -> None:
    m = meshlib.Mesh.from_files(labels={"app": "reviews", "version": "v2"})
    m.enable_metrics()

    async def ok(request: bytes, context: Any) -> bytes:
        return b"ok"

    async def fail(request: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no")
        raise AssertionError("not reached")

    async with serve({"Ok": ok, "Fail": fail}, [m.grpc_server_interceptor()]) as channel:
        for _ in range(3):
            await channel.unary_unary(f"/{SERVICE}/Ok")(b"x")
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary(f"/{SERVICE}/Fail")(b"x")
    lines = [line for line in m.prometheus_text().splitlines() if line.startswith("istio_requests_total{")]
    counts = {
        (line.split('grpc_response_status="')[1].split('"')[0]): float(line.rsplit(" ", 1)[1]) for line in lines
    }
    assert counts == {"0": 3.0, "5": 1.0}
    assert all('reporter="destination"' in line and 'request_protocol="grpc"' in line for line in lines)
    assert all('response_code="200"' in line and 'destination_version="v2"' in line for line in lines)
