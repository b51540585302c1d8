"""``mesh.grpc_channel``: gRPC calls through the meshlib pipeline against real loopback ``grpc.aio`` servers."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

import meshlib
from meshlib.grpc.channel import MeshChannel
from meshlib.grpc.endpoints import Lease
from meshlib.resilience.deadline import deadline_scope
from meshlib.tracing.propagation import INBOUND_HEADERS
from meshlib.tracing.record import OutboundRecord
from tests.integration.grpc_channels.conftest import TARGET, GrpcBackend, GrpcBackendFactory, service_entry, write
from tests.ports import free_port

pytestmark = pytest.mark.asyncio


def virtual_service(http: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
{http}"""


async def echo(channel: MeshChannel, body: bytes = b"hi", *, method: str = "/pkg.Svc/Echo",
               metadata: tuple[tuple[str, str], ...] = ()) -> bytes:
    reply = await channel.unary_unary(method)(body, metadata=metadata)
    assert isinstance(reply, bytes)
    return reply


async def test_metadata_and_method_routing_to_subsets(grpc_backend: GrpcBackendFactory, tmp_path: Path) -> None:
    v1, v2, v3 = await grpc_backend("v1"), await grpc_backend("v2"), await grpc_backend("v3")
    vs = virtual_service("""  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /pkg.Admin/}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - match: [{uri: {exact: /pkg.Svc/Stream}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - route: [{destination: {host: reviews, subset: v1}}]
""")
    cfg = write(tmp_path / "mesh.yaml", service_entry({"v1": v1, "v2": v2, "v3": v3}), vs)
    mesh = meshlib.Mesh.from_files(cfg)
    async with mesh, mesh.grpc_channel(TARGET) as channel:
        assert await echo(channel) == b"v1:hi"
        assert await echo(channel, metadata=(("end-user", "jason"),)) == b"v2:hi"
        assert await echo(channel, method="/pkg.Admin/Echo") == b"v3:hi"
        replies = [m async for m in channel.unary_stream("/pkg.Svc/Stream")(b"")]
        assert replies == [b"v3:0", b"v3:1", b"v3:2"]
    assert [c.method for c in v2.calls] == ["Echo"]
    assert v2.calls[0].metadata["end-user"] == "jason"


async def test_no_route_is_unimplemented_without_hitting_a_server(
    grpc_backend: GrpcBackendFactory, tmp_path: Path
) -> None:
    v1 = await grpc_backend("v1")
    vs = virtual_service("""  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v1}}]
""")
    mesh = meshlib.Mesh.from_files(write(tmp_path / "mesh.yaml", service_entry({"v1": v1}), vs))
    async with mesh, mesh.grpc_channel(TARGET) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await echo(channel)
        assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert v1.hits == 0


async def test_weighted_split(grpc_backend: GrpcBackendFactory, tmp_path: Path) -> None:
    v1, v2 = await grpc_backend("v1"), await grpc_backend("v2")
    vs = virtual_service("""  - route:
    - {destination: {host: reviews, subset: v1}, weight: 75}
    - {destination: {host: reviews, subset: v2}, weight: 25}
""")
    mesh = meshlib.Mesh.from_files(write(tmp_path / "mesh.yaml", service_entry({"v1": v1, "v2": v2}), vs),
                                   rng=random.Random(7))
    async with mesh, mesh.grpc_channel(TARGET) as channel:
        for _ in range(400):
            await echo(channel)
    assert v1.hits + v2.hits == 400
    assert abs(v1.hits - 300) <= 35  # sd ≈ 8.7 at p = 0.75: 4 sd


async def test_least_request_prefers_the_less_loaded_server(grpc_backend: GrpcBackendFactory, tmp_path: Path) -> None:
    slow, fast = await grpc_backend("slow"), await grpc_backend("fast")
    fast.hold.set()  # fast answers Block at once; slow holds every Block open
    vs = virtual_service("  - route: [{destination: {host: reviews}}]\n")
    dr = "    loadBalancer: {simple: LEAST_REQUEST}"
    mesh = meshlib.Mesh.from_files(
        write(tmp_path / "mesh.yaml", service_entry({"slow": slow, "fast": fast}, dr_policy=dr), vs),
        rng=random.Random(3),
    )
    async with mesh, mesh.grpc_channel(TARGET) as channel:
        block = channel.unary_unary("/pkg.Svc/Block")
        held: list[asyncio.Task[bytes]] = []
        for _ in range(40):
            task: asyncio.Task[bytes] = asyncio.ensure_future(block(b""))
            arrival = asyncio.ensure_future(slow.arrived.get())
            # Either the call finished (it went to fast) or it is now held open on slow.
            await asyncio.wait({task, arrival}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                arrival.cancel()
                assert task.result() == b"fast"
            else:
                held.append(task)
        assert mesh.stats()["hosts"][slow.address]["active_requests"] == len(held)
        slow.hold.set()
        assert set(await asyncio.gather(*held)) <= {b"slow"}
    # Once slow holds a call, P2C picks it only when both draws land on it (1/4); round robin: 1/2.
    assert 1 <= slow.hits <= 16
    assert fast.hits >= 24


async def test_failing_server_is_ejected_and_retries_mask_it(
    grpc_backend: GrpcBackendFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[tuple[str, str], ...]] = []
    original = Lease.multicallable

    def recording(self: Lease, *args: Any) -> Any:
        inner = original(self, *args)

        def call(request: Any, **kwargs: Any) -> Any:
            sent.append(tuple(kwargs["metadata"]))
            return inner(request, **kwargs)

        return call

    monkeypatch.setattr(Lease, "multicallable", recording)
    good, bad = await grpc_backend("good"), await grpc_backend("bad")
    bad.fail = True
    vs = virtual_service("""  - route: [{destination: {host: reviews}}]
    retries: {attempts: 3, retryOn: unavailable}
""")
    dr = ("    loadBalancer: {simple: ROUND_ROBIN}\n"
          "    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s,"
          " maxEjectionPercent: 50}")
    mesh = meshlib.Mesh.from_files(
        write(tmp_path / "mesh.yaml", service_entry({"good": good, "bad": bad}, dr_policy=dr), vs),
        rng=random.Random(1),
    )
    async with mesh, mesh.grpc_channel(TARGET) as channel:
        for _ in range(30):
            assert await echo(channel) == b"good:hi"
        stats = mesh.stats()
    assert stats["hosts"][f"127.0.0.1:{bad.port}"]["ejected"]
    assert bad.hits == 2  # ejected after its second UNAVAILABLE
    # grpc-previous-rpc-attempts goes out too, but grpc servers consume it (not in invocation_metadata).
    retried = [c for c in good.calls if "x-envoy-attempt-count" in c.metadata]
    assert [c.metadata["x-envoy-attempt-count"] for c in retried] == ["2", "2"]
    assert sum(("grpc-previous-rpc-attempts", "1") in md for md in sent) == 2
    assert not any(k == "grpc-previous-rpc-attempts" for md in sent[:1] for k, _ in md)
    cluster = next(c for name, c in stats["clusters"].items() if "reviews" in name)
    assert cluster["upstream_rq_retry"] == 2


async def test_inbound_deadline_bounds_the_outbound_call(grpc_backend: GrpcBackendFactory, tmp_path: Path) -> None:
    v1 = await grpc_backend("v1")
    vs = virtual_service("  - route: [{destination: {host: reviews}}]\n    timeout: 10s\n")
    mesh = meshlib.Mesh.from_files(write(tmp_path / "mesh.yaml", service_entry({"v1": v1}), vs))
    async with mesh, mesh.grpc_channel(TARGET) as channel:
        with deadline_scope(time.monotonic() + 0.8):
            assert await echo(channel) == b"v1:hi"
        remaining = v1.calls[0].time_remaining
        # grpcio rounds grpc-timeout up to whole milliseconds: allow that much.
        assert remaining is not None and 0 < remaining <= 0.8 + 0.005

        started = time.monotonic()
        with deadline_scope(time.monotonic() + 0.3), pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/pkg.Svc/Block")(b"")
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 0.3 + 0.5  # fails at the deadline, not after the route timeout (10s)
        blocked = v1.calls[1]
        assert blocked.method == "Block"
        assert blocked.time_remaining is not None and blocked.time_remaining <= 0.3 + 0.005

        # A call's own timeout= is a deadline too.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/pkg.Svc/Block")(b"", timeout=0.2)
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_injected_grpc_abort_never_reaches_the_server(grpc_backend: GrpcBackendFactory, tmp_path: Path) -> None:
    v1 = await grpc_backend("v1")
    vs = virtual_service("""  - route: [{destination: {host: reviews}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
""")
    mesh = meshlib.Mesh.from_files(write(tmp_path / "mesh.yaml", service_entry({"v1": v1}), vs))
    async with mesh, mesh.grpc_channel(TARGET) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await echo(channel)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert ("x-meshlib-local-reply", "FI") in tuple(caught.value.trailing_metadata())
        call = channel.unary_stream("/pkg.Svc/Stream")(b"")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert v1.hits == 0


async def test_streaming_calls_flow_through(grpc_backend: GrpcBackendFactory, tmp_path: Path) -> None:
    v1, v2 = await grpc_backend("v1"), await grpc_backend("v2")
    vs = virtual_service("""  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
""")
    mesh = meshlib.Mesh.from_files(write(tmp_path / "mesh.yaml", service_entry({"v1": v1, "v2": v2}), vs))
    jason = (("end-user", "jason"),)
    async with mesh, mesh.grpc_channel(TARGET) as channel:
        stream = channel.unary_stream("/pkg.Svc/Stream")
        assert [m async for m in stream(b"")] == [b"v1:0", b"v1:1", b"v1:2"]
        call = stream(b"", metadata=jason)
        assert await call.read() == b"v2:0"
        assert [m async for m in call] == [b"v2:1", b"v2:2"]
        assert await call.code() is grpc.StatusCode.OK

        async def requests() -> object:
            for part in (b"a", b"b", b"c"):
                yield part

        chat = channel.stream_stream("/pkg.Svc/Chat")
        assert [m async for m in chat(requests(), metadata=jason)] == [b"v2:a", b"v2:b", b"v2:c"]
        assert await channel.stream_unary("/pkg.Svc/Collect")(iter([b"x", b"y"])) == b"v1:x,y"
        assert channel.endpoint_channels  # the streams released their endpoints
    assert [c.method for c in v2.calls] == ["Stream", "Chat"]


async def test_endpoint_change_keeps_in_flight_calls(grpc_backend: GrpcBackendFactory, tmp_path: Path) -> None:
    old, new = await grpc_backend("old"), await grpc_backend("new")
    new.hold.set()
    vs = virtual_service("  - route: [{destination: {host: reviews}}]\n")
    cfg = write(tmp_path / "mesh.yaml", service_entry({"v1": old}), vs)
    mesh = meshlib.Mesh.from_files(cfg, poll_interval_s=0.05)
    async with mesh, mesh.grpc_channel(TARGET) as channel:
        block = channel.unary_unary("/pkg.Svc/Block")
        in_flight = asyncio.ensure_future(block(b""))
        assert await old.arrived.get() == "Block"
        attempts = mesh.reload_attempts
        write(cfg, service_entry({"v1": new}), vs)
        await mesh.wait_for_reload(attempts)
        assert await block(b"") == b"new"
        # old left the configuration: out of the pool, but its channel stays open for the held call.
        assert channel.endpoint_channels == [f"127.0.0.1:{new.port}"]
        old.hold.set()
        assert await in_flight == b"old"


async def test_connect_failure_is_retried_on_another_endpoint(
    grpc_backend: GrpcBackendFactory, tmp_path: Path
) -> None:
    good = await grpc_backend("good")
    dead = GrpcBackend("dead", port=free_port())
    vs = virtual_service("""  - route: [{destination: {host: reviews}}]
    retries: {attempts: 2, retryOn: connect-failure}
""")
    dr = "    loadBalancer: {simple: ROUND_ROBIN}"
    mesh = meshlib.Mesh.from_files(
        write(tmp_path / "mesh.yaml", service_entry({"good": good, "dead": dead}, dr_policy=dr), vs)
    )
    async with mesh, mesh.grpc_channel(TARGET) as channel:
        for _ in range(4):
            assert await echo(channel) == b"good:hi"
    assert any(c.metadata.get("x-envoy-attempt-count") == "2" for c in good.calls)


class _Records:
    def __init__(self) -> None:
        self.outbound_records: list[OutboundRecord] = []

    def outbound(self, record: OutboundRecord) -> None:
        self.outbound_records.append(record)

    def inbound(self, record: object) -> None:
        pass


async def test_trace_headers_are_carried_and_calls_are_recorded(
    grpc_backend: GrpcBackendFactory, tmp_path: Path
) -> None:
    v1, v2 = await grpc_backend("v1"), await grpc_backend("v2")
    vs = virtual_service("""  - name: faulty
    match: [{uri: {prefix: /pkg.Admin/}}]
    route: [{destination: {host: reviews, subset: v2}}]
    fault: {abort: {grpcStatus: RESOURCE_EXHAUSTED, percentage: {value: 100}}}
  - name: main
    route: [{destination: {host: reviews, subset: v1}}]
""")
    mesh = meshlib.Mesh.from_files(write(tmp_path / "mesh.yaml", service_entry({"v1": v1, "v2": v2}), vs))
    records = _Records()
    mesh.add_telemetry_sink(records)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    token = INBOUND_HEADERS.set((("x-request-id", "req-1"), ("traceparent", traceparent)))
    try:
        async with mesh, mesh.grpc_channel(TARGET) as channel:
            assert await echo(channel) == b"v1:hi"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await echo(channel, method="/pkg.Admin/Echo")
            assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        INBOUND_HEADERS.reset(token)
    assert v1.calls[0].metadata["x-request-id"] == "req-1"
    assert v1.calls[0].metadata["traceparent"] == traceparent
    ok, fault = records.outbound_records
    assert (ok.path, ok.status, ok.grpc_status, ok.route_name, ok.destination_subset) == (
        "/pkg.Svc/Echo", 200, 0, "main", "v1"
    )
    assert ok.upstream_host == v1.address and ok.request_id == "req-1"
    assert (fault.grpc_status, fault.status, fault.response_flags, fault.route_name) == (8, 429, "FI", "faulty")
    assert v2.hits == 0


async def test_non_mesh_target_passes_through(grpc_backend: GrpcBackendFactory, tmp_path: Path) -> None:
    v1, other = await grpc_backend("v1"), await grpc_backend("other")
    mesh = meshlib.Mesh.from_files(write(tmp_path / "mesh.yaml", service_entry({"v1": v1})))
    async with mesh, mesh.grpc_channel(other.address) as channel:
        assert await echo(channel) == b"other:hi"
        assert [m async for m in channel.unary_stream("/pkg.Svc/Stream")(b"")] == [b"other:0", b"other:1", b"other:2"]
        assert channel.endpoint_channels == []


async def test_tracing_gives_each_call_a_client_span(
    grpc_backend: GrpcBackendFactory, tmp_path: Path
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    v1 = await grpc_backend("v1")
    mesh = meshlib.Mesh.from_files(write(tmp_path / "mesh.yaml", service_entry({"v1": v1}),
                                         virtual_service("  - route: [{destination: {host: reviews}}]\n")))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    mesh.enable_tracing(provider)
    inbound = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    token = INBOUND_HEADERS.set((("traceparent", inbound), ("x-request-id", "r-7")))
    try:
        async with mesh, mesh.grpc_channel(TARGET) as channel:
            await echo(channel)
    finally:
        INBOUND_HEADERS.reset(token)
    (span,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    call = v1.calls[0]
    # One traceparent, OpenTelemetry's for the CLIENT span (not the inbound one as well); the rest is copied.
    assert call.keys.count("traceparent") == 1
    assert span.context is not None and call.metadata["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    assert call.metadata["x-request-id"] == "r-7"
