"""Recording a CLIENT span without the SDK's live span object: build what the exporter reads, once.

A recorded CLIENT span is finished off the response path (:mod:`meshlib.tracing.deferred`)
with everything already known: its ids (minted on the request path, see
:mod:`meshlib.tracing.client_spans`), start and end times, attributes and status.
The SDK's way — ``tracer.start_span`` (a mutable ``_Span`` with its lock,
attributes validated one by one, ``on_start`` of every processor) then ``set_status``
and ``end`` (a second, read-only copy for ``on_end``) — costs ≈200k instructions per
request. :class:`LeanSpanRecorder` builds that read-only ``ReadableSpan`` directly,
with the same fields the SDK would give it:

- name (the HTTP method), kind CLIENT, the span context that was sent upstream,
  the parent span context (``None`` for a root), start and end time;
- attributes in the SDK's order (a key set again moves to the end) and under the
  provider's ``SpanLimits`` (count and value length; ``BoundedAttributes`` when a
  limit bites, so ``dropped_attributes`` is the SDK's);
- status ``ERROR`` or ``UNSET``, no events, no links, the tracer's resource and
  instrumentation scope; the SDK's own span metrics (``otel.sdk.span.*``) when enabled;

and hands it to the provider's processors' ``on_end``: a ``BatchSpanProcessor``
queues it for its exporter thread, which exports in batches as usual.

Two shortcuts keep this cheap, each checked against the SDK when the recorder is
made (and not taken when the check fails): the span is an instance of a
``ReadableSpan`` subclass made per tracer, whose seven per-span fields are slots
and whose six per-tracer fields are class attributes — no constructor frame, no
instance dict (one object less per span for the garbage collector to track while
a batch processor holds it), and every property and method the SDK's own; checked
field by field, and by ``to_json()``, against a span the constructor built — and a
``BatchSpanProcessor``'s queue is fed directly, skipping its ``on_end`` re-check that
the span is sampled (every span recorded here is).

It is used only where that is provably what the SDK would do: an SDK tracer (enabled)
whose processors are exactly the SDK's ``BatchSpanProcessor`` / ``SimpleSpanProcessor``
(their ``on_start`` and ``_on_ending`` do nothing), under a sampler
:func:`~meshlib.tracing.client_spans.compile_sampler` reproduces. A custom processor
(it may read or change the live span in ``on_start``), a ``ConcurrentMultiSpanProcessor``,
a custom sampler or a non-SDK provider keep the SDK path (:class:`~meshlib.tracing.client_spans.LazyClientSpans`).
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

__all__ = ["LeanSpanRecorder", "lean_recording_supported"]

_UNSET = Status(StatusCode.UNSET)
_ERROR = Status(StatusCode.ERROR)


_VARYING = ("_name", "_context", "_parent", "_start_time", "_end_time", "_attributes", "_status")


def _span_builder(tracer: Any, readable: type[Any]) -> Callable[..., Any] | None:
    """A ``ReadableSpan`` maker without the constructor's frame and dict; None if its spans would differ.

    The spans are instances of a subclass made per tracer: the seven fields that vary per span are slots
    (set directly, no instance dict is ever made) and the six the tracer fixes are class attributes. The
    subclass adds no behaviour: every property and method is ``ReadableSpan``'s, reading the same names.
    ``build(name, context, parent, attributes, status, start_ns, end_ns)`` is checked here against the SDK's
    constructor: every field the constructor sets reads back equal, and so do the public view and JSON.
    """
    resource, info, scope = tracer.resource, tracer.instrumentation_info, tracer._instrumentation_scope
    try:
        span_type: type[Any] = type(
            "MeshlibClientSpan", (readable,), {
                "__slots__": _VARYING, "__module__": __name__,
                "_kind": SpanKind.CLIENT, "_instrumentation_info": info, "_instrumentation_scope": scope,
                "_events": (), "_links": (), "_resource": resource,
            },
        )
    except TypeError:  # a ReadableSpan that cannot take slotted subclasses
        return None
    new = object.__new__

    def build(  # noqa: PLR0917 - a hot path: positional is cheaper
        name: str, context: SpanContext, parent: SpanContext | None, attributes: Any, status: Status,
        start_ns: int, end_ns: int,
    ) -> Any:
        span = new(span_type)
        span._name = name
        span._context = context
        span._parent = parent
        span._start_time = start_ns
        span._end_time = end_ns
        span._attributes = attributes
        span._status = status
        return span

    sample = (
        "GET", SpanContext(1, 2, False), SpanContext(1, 3, True), MappingProxyType({"k": "v"}), _ERROR, 10, 20
    )
    try:
        expected = readable(
            name=sample[0], context=sample[1], parent=sample[2], resource=resource, attributes=sample[3],
            events=(), links=(), kind=SpanKind.CLIENT, instrumentation_info=info, status=sample[4],
            start_time=sample[5], end_time=sample[6], instrumentation_scope=scope,
        )
        built = build(*sample)
        same = (
            isinstance(built, readable)
            and set(vars(expected)) == set(_VARYING) | {"_kind", "_instrumentation_info", "_instrumentation_scope",
                                                        "_events", "_links", "_resource"}
            and all(getattr(built, field) == value for field, value in vars(expected).items())
            and built.to_json() == expected.to_json()
        )
    except Exception:  # an SDK whose ReadableSpan takes other arguments: the constructor it is
        return None
    return build if same else None


def _enders(processors: tuple[Any, ...]) -> tuple[Callable[[Any], None], ...]:
    """What ends a span on each processor: a batch processor's queue directly, else ``on_end``."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    enders: list[Callable[[Any], None]] = []
    for processor in processors:
        emit = getattr(getattr(processor, "_batch_processor", None), "emit", None)
        # BatchSpanProcessor.on_end is "if the span is sampled: self._batch_processor.emit(span)".
        if type(processor) is BatchSpanProcessor and callable(emit):
            enders.append(emit)
        else:
            enders.append(processor.on_end)
    return tuple(enders)


def lean_recording_supported(tracer: Any) -> bool:
    """True when :class:`LeanSpanRecorder` reproduces what ``tracer`` would export (module docstring)."""
    try:
        from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor
        from opentelemetry.sdk.trace import Tracer as SdkTracer
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        return False
    if type(tracer) is not SdkTracer:
        return False
    processor = getattr(tracer, "span_processor", None)
    if type(processor) is not SynchronousMultiSpanProcessor:
        return False
    processors = getattr(processor, "_span_processors", None)
    if not isinstance(processors, tuple):
        return False
    return all(type(p) in (BatchSpanProcessor, SimpleSpanProcessor) for p in processors)


class LeanSpanRecorder:
    """Turns a finished CLIENT span's fields into the SDK's ``ReadableSpan`` and ends it on the processors."""

    __slots__ = (
        "_bounded",
        "_build",
        "_decision",
        "_enders",
        "_max_attributes",
        "_max_value_len",
        "_metrics",
        "_processor",
        "_processors",
        "_readable",
        "_tracer",
    )

    def __init__(self, tracer: Any) -> None:
        from opentelemetry.attributes import BoundedAttributes
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
        from opentelemetry.sdk.trace.sampling import Decision

        self._tracer = tracer
        self._decision = Decision.RECORD_AND_SAMPLE
        # The SDK's own span metrics (otel.sdk.span.started/live), when its internal metrics are on.
        self._metrics = None if type(tracer._tracer_metrics) is NoOpTracerMetrics else tracer._tracer_metrics
        self._readable = ReadableSpan
        self._bounded = BoundedAttributes
        self._processor = tracer.span_processor
        self._processors = self._processor._span_processors  # a new tuple whenever one is added
        self._enders = _enders(self._processors)
        self._build = _span_builder(tracer, ReadableSpan)
        limits = tracer._span_limits
        self._max_attributes: int | None = limits.max_span_attributes
        self._max_value_len: int | None = limits.max_span_attribute_length

    def still_supported(self) -> bool:
        """Processors can be added to a provider later; a custom one ends lean recording."""
        processor = self._tracer.span_processor
        if processor is self._processor and processor._span_processors is self._processors:
            return True
        if not lean_recording_supported(self._tracer):
            return False
        self._processor, self._processors = processor, processor._span_processors
        self._enders = _enders(self._processors)
        return True

    def record(  # noqa: PLR0917 - a hot path: positional is cheaper
        self, name: str, context: SpanContext, parent: SpanContext | None, attributes: Any, start_ns: int,
        end_ns: int, error: bool,
    ) -> None:
        """End one sampled span: what ``start_span(...)`` + ``set_status`` + ``end(end_ns)`` would export.

        ``attributes``: as :meth:`final_attributes` made them (they may be shared by many spans: nothing
        changes them).
        """
        tracer = self._tracer
        if not tracer._tracer_config.is_enabled:  # the SDK's tracer configurator can disable a tracer any time
            return
        metrics = self._metrics
        end_metrics: Callable[[], None] | None = (
            None if metrics is None else metrics.start_span(parent, self._decision)
        )
        build = self._build
        if build is not None:
            span = build(name, context, parent, attributes, _ERROR if error else _UNSET, start_ns, end_ns)
        else:
            span = self._readable(
                name=name,
                context=context,
                parent=parent,
                resource=tracer.resource,
                attributes=attributes,
                events=(),
                links=(),
                kind=SpanKind.CLIENT,
                instrumentation_info=tracer.instrumentation_info,
                status=_ERROR if error else _UNSET,
                start_time=start_ns,
                end_time=end_ns,
                instrumentation_scope=tracer._instrumentation_scope,
            )
        if end_metrics is not None:
            end_metrics()
        for end in self._enders:
            end(span)

    def final_attributes(self, attributes: dict[str, Any]) -> Any:
        """The attributes as the SDK would hold them once the span ended (limits applied), read-only."""
        limit, max_len = self._max_attributes, self._max_value_len
        fits = limit is None or len(attributes) <= limit
        if fits and max_len is not None:
            fits = all(not isinstance(value, str) or len(value) <= max_len for value in attributes.values())
        if fits:  # every value is a str/int we built: nothing for the SDK to clean, drop or cut
            return MappingProxyType(attributes)
        return self._bounded(limit, attributes, immutable=True, max_value_len=max_len)
