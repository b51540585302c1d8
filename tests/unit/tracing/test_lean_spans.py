"""Lean CLIENT span recording exports exactly what the SDK's own span would, field by field.

The same span (same ids, times, attributes, parent) is recorded twice: through
:class:`LeanSpanRecorder` and through the SDK (``tracer.start_span`` + ``end``,
forced by a processor subclass the lean path does not recognise). Every field an
exporter reads must be equal, and ``to_json()`` (which serialises all of them) too.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ConcurrentMultiSpanProcessor, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from yarl import URL

from meshlib.tracing.client_spans import ClientSpan, LazyClientSpans
from meshlib.tracing.lean_spans import lean_recording_supported


class SeededIds(IdGenerator):
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def generate_span_id(self) -> int:
        return self.rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self.rng.getrandbits(128) or 1


class ForcedSdkPath(SimpleSpanProcessor):
    """Behaves as SimpleSpanProcessor; being a subclass, it keeps meshlib on the SDK's span path."""


def _provider(processor_type: type[SimpleSpanProcessor], **kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        id_generator=SeededIds(7), resource=Resource.create({"service.name": "productpage"}), **kwargs
    )
    provider.add_span_processor(processor_type(exporter))
    return provider, exporter


def _fields(span: ReadableSpan) -> dict[str, Any]:
    context = span.context
    assert context is not None
    return {
        "name": span.name,
        "context": (context.trace_id, context.span_id, int(context.trace_flags), context.is_remote,
                    context.trace_state.to_header()),
        "parent": None if span.parent is None else (
            span.parent.trace_id, span.parent.span_id, int(span.parent.trace_flags), span.parent.is_remote),
        "kind": span.kind,
        "attributes": list(dict(span.attributes or {}).items()),  # order too
        "dropped_attributes": span.dropped_attributes,
        "status": (span.status.status_code, span.status.description),
        "start_time": span.start_time,
        "end_time": span.end_time,
        "events": list(span.events),
        "links": list(span.links),
        "dropped_events": span.dropped_events,
        "dropped_links": span.dropped_links,
        "resource": (dict(span.resource.attributes), span.resource.schema_url),
        "scope": span.instrumentation_scope,
    }


class ForcedBatchSdkPath(BatchSpanProcessor):
    """Behaves as BatchSpanProcessor; being a subclass, it keeps meshlib on the SDK's span path."""


def _record_both(
    parent: Context, end_attributes: dict[str, Any], *, error: bool, url: object = "http://reviews:9080/r?x=1",
    processors: tuple[type[Any], type[Any]] = (SimpleSpanProcessor, ForcedSdkPath), **provider_kwargs: Any,
) -> tuple[ReadableSpan, ReadableSpan]:
    spans = []
    for processor_type in processors:
        provider, exporter = _provider(processor_type, **provider_kwargs)
        tracer = provider.get_tracer("meshlib", "9.9")
        lazy = LazyClientSpans(tracer)
        assert (lazy._lean is not None) is (processor_type is processors[0])
        if lazy._lean is not None:
            assert lazy._lean._build is not None  # the installed SDK's ReadableSpan takes the slotted-subclass shortcut
        client_span = lazy.begin(parent, ClientSpan("GET", url, 1_000_000_123, None, None))
        lazy.record(client_span, dict(end_attributes), 1_000_450_789, error)
        provider.force_flush()
        [span] = exporter.get_finished_spans()
        spans.append(span)
        provider.shutdown()
    return spans[0], spans[1]


END = {"meshlib.attempts": 2, "http.response.status_code": 503, "http.request.resend_count": 1,
       "meshlib.route": "default", "meshlib.cluster": "outbound|9080|v1|reviews.default.svc.cluster.local",
       "meshlib.endpoint": "127.0.0.1:9080", "network.peer.address": "127.0.0.1", "error.type": "503"}


@pytest.mark.parametrize("error", [False, True])
def test_root_span_fields_equal(error: bool) -> None:
    lean, sdk = _record_both(Context(), END, error=error)
    assert _fields(lean) == _fields(sdk)
    assert lean.to_json() == sdk.to_json()
    assert lean.parent is None and lean.status.status_code.name == ("ERROR" if error else "UNSET")


def test_a_batch_processor_is_fed_directly_and_exports_the_same_span() -> None:
    lean, sdk = _record_both(Context(), END, error=True, processors=(BatchSpanProcessor, ForcedBatchSdkPath))
    assert _fields(lean) == _fields(sdk)
    assert lean.to_json() == sdk.to_json()


def test_a_readable_span_with_other_fields_keeps_its_constructor(monkeypatch: pytest.MonkeyPatch) -> None:
    from meshlib.tracing import lean_spans

    original = ReadableSpan.__init__

    def init(self: ReadableSpan, *args: Any, **kwargs: Any) -> None:  # a future SDK with one field more
        original(self, *args, **kwargs)
        self._extra = "new"  # type: ignore[attr-defined]

    monkeypatch.setattr(ReadableSpan, "__init__", init)
    provider, exporter = _provider(SimpleSpanProcessor)
    tracer = provider.get_tracer("meshlib", "9.9")
    assert lean_spans._span_builder(tracer, ReadableSpan) is None
    lazy = LazyClientSpans(tracer)
    assert lazy._lean is not None and lazy._lean._build is None
    client_span = lazy.begin(Context(), ClientSpan("GET", "http://reviews:9080/r", 1_000, None, None))
    lazy.record(client_span, {"meshlib.attempts": 1}, 2_000, False)
    [span] = exporter.get_finished_spans()
    assert span._extra == "new"  # type: ignore[attr-defined]  # built by the constructor


def test_child_of_a_remote_sampled_parent_with_tracestate() -> None:
    parent_context = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1),
                                 trace_state=TraceState([("vendor", "v1")]))
    parent = trace.set_span_in_context(NonRecordingSpan(parent_context))
    lean, sdk = _record_both(parent, {"meshlib.attempts": 1, "http.response.status_code": 200}, error=False,
                             sampler=ParentBased(TraceIdRatioBased(0.5)))
    assert _fields(lean) == _fields(sdk)
    assert lean.to_json() == sdk.to_json()
    assert lean.context is not None and lean.context.trace_id == 0xABC
    assert lean.context.trace_state.to_header() == "vendor=v1"


def test_a_resent_key_moves_last_as_with_set_attributes() -> None:
    client_end = {"http.request.resend_count": 3, "meshlib.endpoint": "10.0.0.1:80"}
    lean, sdk = _record_both(Context(), client_end, error=False, url=URL("http://u:p@reviews:9080/a?sig=x"))
    assert list(dict(lean.attributes or {})) == list(dict(sdk.attributes or {}))
    assert _fields(lean) == _fields(sdk)  # url.full credentials redacted alike


@pytest.mark.parametrize("limits", [SpanLimits(max_span_attributes=3), SpanLimits(max_span_attribute_length=8),
                                    SpanLimits(max_span_attributes=0)])
def test_span_limits_apply_as_in_the_sdk(limits: SpanLimits) -> None:
    lean, sdk = _record_both(Context(), END, error=True, span_limits=limits, sampler=ALWAYS_ON)
    assert _fields(lean) == _fields(sdk)
    assert lean.to_json() == sdk.to_json()
    assert lean.dropped_attributes == sdk.dropped_attributes


def test_only_the_sdks_own_processors_take_the_lean_path() -> None:
    def tracer_with(*processors: Any) -> Any:
        provider = TracerProvider()
        for processor in processors:
            provider.add_span_processor(processor)
        return provider.get_tracer("meshlib")

    exporter = InMemorySpanExporter()
    assert lean_recording_supported(tracer_with())
    assert lean_recording_supported(tracer_with(SimpleSpanProcessor(exporter), BatchSpanProcessor(exporter)))
    assert not lean_recording_supported(tracer_with(ForcedSdkPath(exporter)))
    concurrent = TracerProvider(active_span_processor=ConcurrentMultiSpanProcessor())
    assert not lean_recording_supported(concurrent.get_tracer("meshlib"))
    assert not lean_recording_supported(trace.NoOpTracer())


def test_a_custom_processor_added_later_switches_back_to_the_sdk_path() -> None:
    seen: list[str] = []

    class Marking(SimpleSpanProcessor):
        def on_start(self, span: Any, parent_context: Context | None = None) -> None:
            seen.append("start")
            span.set_attribute("tenant", "t1")

    provider, exporter = _provider(SimpleSpanProcessor)
    lazy = LazyClientSpans(provider.get_tracer("meshlib"))
    assert lazy._lean is not None
    provider.add_span_processor(Marking(exporter))
    client_span = lazy.begin(Context(), ClientSpan("GET", "http://a/", 1, None, None))
    lazy.record(client_span, {"meshlib.attempts": 1}, 2, False)
    assert seen == ["start"]
    spans = exporter.get_finished_spans()
    assert len(spans) == 2 and all((s.attributes or {}).get("tenant") == "t1" for s in spans)


# -- the request path: begin_client_or_propagate -------------------------------------------------------------


def _tracing(sampler: Any) -> tuple[Any, InMemorySpanExporter]:
    from meshlib.tracing.spans import Tracing

    provider, exporter = _provider(SimpleSpanProcessor, sampler=sampler)
    return Tracing(provider), exporter


def _parent(sampled: bool, state: str = "") -> Context:
    context = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1 if sampled else 0),
                          trace_state=TraceState.from_header([state]) if state else TraceState())
    return trace.set_span_in_context(NonRecordingSpan(context))


@pytest.mark.parametrize("sampled", [False, True])
def test_the_fast_path_writes_what_begin_client_and_inject_write(sampled: bool) -> None:
    from opentelemetry import baggage
    from opentelemetry import context as otel_context

    parent = baggage.set_baggage("user", "jason", _parent(sampled, "vendor=v1"))
    fast_tracing, _ = _tracing(ParentBased(ALWAYS_ON))
    full_tracing, _ = _tracing(ParentBased(ALWAYS_ON))
    token = otel_context.attach(parent)
    sent = []
    try:
        for _ in range(3):  # a handler's calls under one parent (the unsampled ones reuse what they derived)
            fast: dict[str, str] = {}
            span = fast_tracing.begin_client_or_propagate("GET", "http://a/", fast)
            full: dict[str, str] = {}
            full_tracing.inject(full_tracing.begin_client("GET", "http://a/", 1), full)
            assert (span is not None) is sampled
            assert fast.keys() == full.keys() == {"traceparent", "tracestate", "baggage"}
            assert fast["tracestate"] == full["tracestate"] == "vendor=v1" and fast["baggage"] == full["baggage"]
            # Same seeded id sequence in both providers: the same ids, the same flags.
            assert fast["traceparent"] == full["traceparent"]
            assert fast["traceparent"].startswith("00-00000000000000000000000000001234-")
            assert fast["traceparent"].endswith("-01" if sampled else "-00")
            sent.append(fast["traceparent"])
    finally:
        otel_context.detach(token)
    assert len(set(sent)) == 3  # a new span id each time


def test_sampled_out_roots_leave_nothing_to_record() -> None:
    tracing, exporter = _tracing(ParentBased(TraceIdRatioBased(0.0)))
    headers: dict[str, str] = {}
    assert tracing.begin_client_or_propagate("GET", "http://a/", headers) is None
    trace_id, span_id, flags = headers["traceparent"].split("-")[1:]
    assert int(trace_id, 16) and int(span_id, 16) and flags == "00"
    assert set(headers) == {"traceparent"}
    assert exporter.get_finished_spans() == ()


def test_a_sampled_span_from_the_fast_path_records_with_the_ids_sent() -> None:
    from meshlib.tracing.observation import Observation

    tracing, exporter = _tracing(ALWAYS_ON)
    headers: dict[str, str] = {}
    span = tracing.begin_client_or_propagate("GET", URL("http://reviews:9080/r"), headers)
    assert span is not None and span.start_ns > 0
    observation = Observation()
    observation.status, observation.end_ns = 200, span.start_ns + 1000
    tracing.finish_client(span, observation)
    [exported] = exporter.get_finished_spans()
    assert exported.context is not None and exported.parent is None
    assert headers["traceparent"] == f"00-{exported.context.trace_id:032x}-{exported.context.span_id:016x}-01"
    assert (exported.attributes or {})["http.response.status_code"] == 200


def test_end_attributes_are_memoised_per_decision_and_outcome() -> None:
    """One routing decision (as the fused path shares it): each outcome gets its own attributes, and a
    repeated outcome exports the same ones, without the shared objects being changed by later spans."""
    from meshlib.decision import Action, Decision
    from meshlib.tracing.observation import Observation

    tracing, exporter = _tracing(ALWAYS_ON)
    decision = Decision(Action.ROUTE)
    decision.telemetry_memo = {}  # shared, as the fused path marks its memoised decisions
    outcomes = [(200, 1, "-", "10.0.0.1:80"), (503, 3, "URX", "10.0.0.2:80"), (200, 1, "-", "10.0.0.1:80")]
    for status, attempts, flags, endpoint in outcomes:
        span = tracing.begin_client_or_propagate("GET", URL("http://reviews:9080/r"), {})
        assert span is not None
        observation = Observation()
        observation.describe(decision, "reviews:9080")
        observation.status, observation.attempts, observation.flags = status, attempts, flags
        observation.upstream_host, observation.end_ns = endpoint, span.start_ns + 1000
        tracing.finish_client(span, observation)
    first, failed, again = (dict(span.attributes or {}) for span in exporter.get_finished_spans())
    assert first == again and first["http.response.status_code"] == 200 and "error.type" not in first
    assert failed["http.response.status_code"] == 503 and failed["http.request.resend_count"] == 2
    assert failed["meshlib.response_flags"] == "URX" and failed["network.peer.address"] == "10.0.0.2"
    assert [span.status.is_ok for span in exporter.get_finished_spans()] == [True, False, True]
    assert decision.telemetry_memo is not None and len(decision.telemetry_memo) == 2
    # A decision made for one request keeps nothing.
    single = Decision(Action.ROUTE)
    span = tracing.begin_client_or_propagate("GET", URL("http://reviews:9080/r"), {})
    assert span is not None
    observation = Observation()
    observation.describe(single, "reviews:9080")
    observation.status, observation.attempts, observation.end_ns = 200, 1, span.start_ns + 1000
    observation.upstream_host = "10.0.0.1:80"
    tracing.finish_client(span, observation)
    assert single.telemetry_memo is None and dict(exporter.get_finished_spans()[-1].attributes or {}) == first


def test_a_custom_sampler_keeps_the_sdk_path_and_its_decision() -> None:
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class Never(Sampler):
        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            return SamplingResult(Decision.DROP)

        def get_description(self) -> str:
            return "never"

    tracing, exporter = _tracing(Never())
    headers: dict[str, str] = {}
    assert tracing.begin_client_or_propagate("GET", "http://a/", headers) is None
    assert headers["traceparent"].endswith("-00")
    assert exporter.get_finished_spans() == ()


def test_a_dropped_root_with_the_sdks_own_ids_comes_from_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """ParentBased(ALWAYS_OFF) with the SDK's RandomIdGenerator: ids drawn from ``random`` in batches."""
    from opentelemetry import baggage
    from opentelemetry import context as otel_context
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    from meshlib.tracing.root_ids import BATCH
    from meshlib.tracing.spans import Tracing

    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))  # the SDK's default id generator
    tracing = Tracing(provider)
    assert tracing._lazy is not None and tracing._lazy._new_roots is not None
    flags = "02" if tracing._lazy._random_ids else "00"  # W3C's random-trace-id bit where the API has it
    random.seed(11)
    expected = random.getrandbits(192 * BATCH) & (2**192 - 1)  # the batch's last id is handed out first
    random.seed(11)
    headers: dict[str, str] = {}
    assert tracing.begin_client_or_propagate("GET", "http://a/", headers) is None
    assert headers == {"traceparent": f"00-{expected >> 64:032x}-{expected & (2**64 - 1):016x}-{flags}"}
    # Baggage still travels with it.
    token = otel_context.attach(baggage.set_baggage("user", "jason"))
    try:
        headers = {}
        assert tracing.begin_client_or_propagate("GET", "http://a/", headers) is None
        assert headers["baggage"] == "user=jason" and headers["traceparent"].endswith(f"-{flags}")
    finally:
        otel_context.detach(token)


def test_a_recorded_root_with_the_sdks_own_ids_comes_from_the_batch() -> None:
    """ALWAYS_ON with the SDK's RandomIdGenerator: ids and header from the batch, and the span exported with them."""
    from meshlib.tracing.observation import Observation
    from meshlib.tracing.root_ids import BATCH
    from meshlib.tracing.spans import Tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON)  # the SDK's default id generator
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    assert tracing._lazy is not None and tracing._lazy._new_roots is not None
    flags = "03" if tracing._lazy._random_ids else "01"
    random.seed(5)
    expected = random.getrandbits(192 * BATCH) & (2**192 - 1)  # the batch's last id is handed out first
    random.seed(5)
    sent = []
    for _ in range(3):
        headers: dict[str, str] = {}
        span = tracing.begin_client_or_propagate("GET", URL("http://reviews:9080/r"), headers)
        assert span is not None and span.recording
        observation = Observation()
        observation.status, observation.end_ns = 200, span.start_ns + 1000
        tracing.finish_client(span, observation)
        sent.append(headers["traceparent"])
    assert sent[0] == f"00-{expected >> 64:032x}-{expected & (2**64 - 1):016x}-{flags}"
    assert len(set(sent)) == 3
    exported = [
        f"00-{s.context.trace_id:032x}-{s.context.span_id:016x}-{flags}"
        for s in exporter.get_finished_spans() if s.context is not None
    ]
    assert exported == sent
