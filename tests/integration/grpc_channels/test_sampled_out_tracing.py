"""A sampled-out gRPC call through a mesh channel: its context travels, nothing is recorded or observed."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

import meshlib
from meshlib.tracing.observation import Observation
from tests.integration.grpc_channels.conftest import TARGET, GrpcBackendFactory, service_entry, write

pytestmark = pytest.mark.asyncio


async def test_a_sampled_out_call_carries_an_unsampled_traceparent_and_builds_no_observation(
    grpc_backend: GrpcBackendFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = await grpc_backend("v1")
    mesh = meshlib.Mesh.from_files(write(tmp_path / "mesh.yaml", service_entry({"v1": v1})))
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    mesh.enable_tracing(provider)
    observations: list[Observation] = []
    original_init = Observation.__init__

    def counted(self: Observation) -> None:
        original_init(self)
        observations.append(self)

    monkeypatch.setattr(Observation, "__init__", counted)
    async with mesh, mesh.grpc_channel(TARGET) as channel:
        for _ in range(2):
            assert await channel.unary_unary("/pkg.Svc/Echo")(b"hi") == b"v1:hi"
    mesh.flush_telemetry()
    sent = [call.metadata["traceparent"] for call in v1.calls]
    assert len(sent) == 2 and all(not int(value.split("-")[3], 16) & 1 for value in sent)  # not sampled
    assert len({value.split("-")[1] for value in sent}) == 2  # two roots: two trace ids
    assert observations == []
    assert exporter.get_finished_spans() == ()
