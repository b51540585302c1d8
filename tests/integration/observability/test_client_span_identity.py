"""The CLIENT span recorded after the response is the one the upstream was told about.

With the SDK and a built-in sampler, meshlib mints the span's ids and sampling
decision on the request path and records the SDK span later
(meshlib.tracing.client_spans). These tests compare, for real requests to a
real upstream, the ``traceparent`` each upstream request carried with the
exported span: same trace id, same span id, same flags, right parent — and a
dropped span is neither exported nor marked sampled.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

import meshlib
from meshlib.tracing.client_spans import lazy_recording_supported
from tests.integration.misbehaving import http_upstream, mesh_yaml

pytestmark = pytest.mark.asyncio


def make(tmp_path: Path, yaml: str) -> meshlib.Mesh:
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml)
    return meshlib.Mesh.from_files(path)


def traceparent_fields(value: str) -> tuple[int, int, int]:
    version, trace_id, span_id, flags = value.split("-")
    assert version == "00"
    return int(trace_id, 16), int(span_id, 16), int(flags, 16)


def clients(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is SpanKind.CLIENT]


async def send(mesh: meshlib.Mesh, count: int) -> None:
    async with mesh.session() as http:
        for _ in range(count):
            async with http.get("http://svc:9080/") as resp:
                assert resp.status == 200


def provider_with(sampler: Sampler) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.mark.parametrize(
    "sampler", [ALWAYS_ON, ParentBased(ALWAYS_ON), TraceIdRatioBased(0.5), ParentBased(TraceIdRatioBased(0.5))],
    ids=lambda s: s.get_description(),
)
async def test_exported_span_matches_the_traceparent_sent(tmp_path: Path, sampler: Sampler) -> None:
    release = asyncio.Event()
    async with http_upstream("a", "ok", release) as upstream:
        mesh = make(tmp_path, mesh_yaml({"a": upstream.port}))
        provider, exporter = provider_with(sampler)
        mesh.enable_tracing(provider)
        assert lazy_recording_supported(provider.get_tracer("meshlib"))
        async with mesh:
            await send(mesh, 40)
            mesh.flush_telemetry()
            exported = {s.context.span_id: s for s in clients(exporter.get_finished_spans())}
    sent = [traceparent_fields(h["traceparent"]) for h in upstream.headers]
    assert len(sent) == 40
    sampled = [(t, s, f) for t, s, f in sent if f & 0x01]
    if "TraceIdRatioBased" in sampler.get_description():
        assert 0 < len(sampled) < 40  # both outcomes occurred: the check below covers both
    else:
        assert len(sampled) == 40
    assert set(exported) == {span_id for _, span_id, _ in sampled}  # exactly the sampled ones were recorded
    for trace_id, span_id, flags in sampled:
        span = exported[span_id]
        assert span.context.trace_id == trace_id
        assert int(span.context.trace_flags) == flags
        assert span.parent is None  # no inbound request: a root span
        assert span.attributes is not None
        assert span.attributes["url.full"] == "http://svc:9080/"
        assert span.attributes["http.response.status_code"] == 200
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= span.end_time


async def test_child_of_the_current_span_and_dropped_under_an_unsampled_parent(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("a", "ok", release) as upstream:
        mesh = make(tmp_path, mesh_yaml({"a": upstream.port}))
        provider, exporter = provider_with(ParentBased(ALWAYS_ON))
        mesh.enable_tracing(provider)
        tracer = provider.get_tracer("app")
        async with mesh:
            with tracer.start_as_current_span("handler") as parent:
                await send(mesh, 1)
            unsampled = trace.NonRecordingSpan(trace.SpanContext(
                0x1234, 0x5678, is_remote=True, trace_flags=trace.TraceFlags(0)
            ))
            token = otel_context.attach(trace.set_span_in_context(unsampled))
            try:
                await send(mesh, 1)
            finally:
                otel_context.detach(token)
            mesh.flush_telemetry()
            spans = clients(exporter.get_finished_spans())
    first, second = (traceparent_fields(h["traceparent"]) for h in upstream.headers)
    assert len(spans) == 1  # the unsampled parent's child was not recorded
    (span,) = spans
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    assert (span.context.trace_id, span.context.span_id) == first[:2]
    assert first[0] == parent.get_span_context().trace_id
    assert second[0] == 0x1234 and second[2] & 0x01 == 0  # same trace, not sampled


async def test_always_off_sends_unsampled_context_and_records_nothing(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("a", "ok", release) as upstream:
        mesh = make(tmp_path, mesh_yaml({"a": upstream.port}))
        provider, exporter = provider_with(ALWAYS_OFF)
        mesh.enable_tracing(provider)
        async with mesh:
            await send(mesh, 3)
    assert exporter.get_finished_spans() == ()
    assert all(traceparent_fields(h["traceparent"])[2] & 0x01 == 0 for h in upstream.headers)


class CoinSampler(Sampler):
    """A sampler whose decision is not a function of its inputs: meshlib must start spans eagerly."""

    def __init__(self) -> None:
        self.rng = random.Random(7)

    def should_sample(  # noqa: PLR0917 - the SDK's signature
        self, parent_context: Context | None, trace_id: int, name: str, kind: SpanKind | None = None,
        attributes: Attributes = None, links: Sequence[Link] | None = None, trace_state: object = None,
    ) -> SamplingResult:
        decision = Decision.RECORD_AND_SAMPLE if self.rng.random() < 0.5 else Decision.DROP
        return SamplingResult(decision, attributes)

    def get_description(self) -> str:
        return "coin"


async def test_a_custom_sampler_starts_spans_on_the_request_path(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("a", "ok", release) as upstream:
        mesh = make(tmp_path, mesh_yaml({"a": upstream.port}))
        provider, exporter = provider_with(CoinSampler())
        assert not lazy_recording_supported(provider.get_tracer("meshlib"))
        mesh.enable_tracing(provider)
        async with mesh:
            await send(mesh, 30)
            mesh.flush_telemetry()
            exported = {s.context.span_id: s for s in clients(exporter.get_finished_spans())}
    sent = [traceparent_fields(h["traceparent"]) for h in upstream.headers]
    sampled = {span_id for _, span_id, flags in sent if flags & 0x01}
    assert 0 < len(sampled) < 30
    assert set(exported) == sampled
    for span in exported.values():
        assert span.attributes is not None and span.attributes["url.full"] == "http://svc:9080/"
