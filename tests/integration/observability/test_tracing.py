"""Automatic propagation and OpenTelemetry spans across a real server → two parallel outbound calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import meshlib
from tests.integration.misbehaving import Upstream, http_upstream, mesh_yaml

pytestmark = pytest.mark.asyncio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@asynccontextmanager
async def frontend(mesh: meshlib.Mesh, targets: list[str]) -> AsyncIterator[int]:
    """An aiohttp app behind mesh.server_middleware() whose handler fans out to ``targets`` in parallel."""
    async with mesh.session() as http:

        async def fan_out(request: web.Request) -> web.Response:
            async def call(url: str) -> int:
                async with http.get(url) as resp:
                    return resp.status

            statuses = await asyncio.gather(*(call(u) for u in targets))
            return web.json_response(statuses)

        app = web.Application(middlewares=[mesh.server_middleware()])
        app.router.add_get("/page", fan_out)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        finally:
            await runner.cleanup()


def two_services(a: Upstream, b: Upstream) -> str:
    one = mesh_yaml({"a": a.port})
    two = mesh_yaml({"b": b.port}).replace("name: svc", "name: other").replace("svc.default", "other.default")
    two = two.replace("host: svc", "host: other").replace("hosts: [svc]", "hosts: [other]")
    return one + "\n---\n" + two


async def call_frontend(port: int, headers: dict[str, str]) -> list[int]:
    async with aiohttp.ClientSession() as plain, plain.get(f"http://127.0.0.1:{port}/page", headers=headers) as resp:
        assert resp.status == 200
        return list(await resp.json())


def make(tmp_path: Path, yaml: str) -> meshlib.Mesh:
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml)
    return meshlib.Mesh.from_files(path)


def traced(mesh: meshlib.Mesh) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    mesh.enable_tracing(provider)
    return exporter


def by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is kind]


async def test_one_trace_across_server_and_two_parallel_calls(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("a", "ok", release) as a, http_upstream("b", "ok", release) as b:
        mesh = make(tmp_path, two_services(a, b))
        exporter = traced(mesh)
        async with mesh, frontend(mesh, ["http://svc:9080/x", "http://other:9080/y"]) as port:
            assert await call_frontend(port, {}) == [200, 200]
    spans = exporter.get_finished_spans()
    (server,) = by_kind(spans, SpanKind.SERVER)
    clients = by_kind(spans, SpanKind.CLIENT)
    assert len(clients) == 2
    trace_id = server.context.trace_id
    for client in clients:
        assert client.context.trace_id == trace_id
        assert client.parent is not None
        assert client.parent.span_id == server.context.span_id
        assert client.attributes["meshlib.cluster"] in {
            "outbound|9080||svc.default.svc.cluster.local", "outbound|9080||other.default.svc.cluster.local"
        }
    # Each upstream saw a traceparent naming the CLIENT span that called it.
    sent = {tuple(h.headers[0]["traceparent"].split("-")[:3]) for h in (a, b)}
    expected = {("00", f"{trace_id:032x}", f"{c.context.span_id:016x}") for c in clients}
    assert sent == expected
    assert server.attributes["http.route"] == "/page"
    assert server.name == "GET /page"


async def test_retries_appear_as_attempt_spans(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("bad", "503", release) as bad, http_upstream("good", "ok", release) as good:
        yaml = mesh_yaml({"bad": bad.port, "good": good.port}, vs_rule="    retries: {attempts: 3, retryOn: 5xx}")
        mesh = make(tmp_path, yaml)
        exporter = traced(mesh)
        async with mesh, mesh.session() as http:
            for _ in range(2):  # round robin: one of the two requests starts on the bad host
                async with http.get("http://svc:9080/") as resp:
                    assert resp.status == 200
    clients = by_kind(exporter.get_finished_spans(), SpanKind.CLIENT)
    retried = [s for s in clients if s.attributes.get("http.request.resend_count") == 1]
    assert retried, "a retry should be its own CLIENT span with http.request.resend_count"
    attempt = next(s for s in retried if s.parent is not None and "meshlib.attempts" not in s.attributes)
    logical = next(s for s in clients if s.context.span_id == attempt.parent.span_id)  # type: ignore[union-attr]
    assert logical.attributes["meshlib.attempts"] == 2
    assert attempt.attributes["http.response.status_code"] == 200
    # The good host saw the attempt span's context on the retried request.
    retried_headers = [h for h in good.headers if h["x-envoy-attempt-count"] == "2"]
    assert retried_headers[0]["traceparent"].split("-")[2] == f"{attempt.context.span_id:016x}"


async def test_b3_upstream_and_w3c_downstream_share_one_trace(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("a", "ok", release) as a, http_upstream("b", "ok", release) as b:
        mesh = make(tmp_path, two_services(a, b))
        exporter = traced(mesh)
        b3 = {"x-b3-traceid": TRACE_ID, "x-b3-spanid": "00f067aa0ba902b7", "x-b3-sampled": "1"}
        async with mesh, frontend(mesh, ["http://svc:9080/x"]) as port:
            await call_frontend(port, b3)
    (server,) = by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    assert f"{server.context.trace_id:032x}" == TRACE_ID  # the B3 caller's trace continues
    assert a.headers[0]["traceparent"].split("-")[1] == TRACE_ID  # and reaches the W3C callee


async def test_request_id_preserved_or_generated_once_at_the_edge(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("a", "ok", release) as a, http_upstream("b", "ok", release) as b:
        mesh = make(tmp_path, two_services(a, b))
        async with mesh, frontend(mesh, ["http://svc:9080/x", "http://other:9080/y"]) as port:
            await call_frontend(port, {"x-request-id": "req-42"})
            await call_frontend(port, {})
    assert a.headers[0]["x-request-id"] == b.headers[0]["x-request-id"] == "req-42"
    generated = a.headers[1]["x-request-id"]
    assert generated == b.headers[1]["x-request-id"]  # one id for the whole fan-out
    assert len(generated) == 36


async def test_propagation_without_tracing_copies_headers_as_is(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("a", "ok", release) as a, http_upstream("b", "ok", release) as b:
        mesh = make(tmp_path, two_services(a, b))  # no enable_tracing: headers are copied verbatim
        inbound = {
            "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
            "tracestate": "vendor=1",
            "baggage": "user=jason",
            "x-b3-traceid": TRACE_ID,
            "x-datadog-trace-id": "123",
            "sw8": "1-abc",
        }
        async with mesh, frontend(mesh, ["http://svc:9080/x", "http://other:9080/y"]) as port:
            await call_frontend(port, inbound)
    for upstream in (a, b):
        sent = upstream.headers[0]
        for name, value in inbound.items():
            assert sent[name] == value, name
