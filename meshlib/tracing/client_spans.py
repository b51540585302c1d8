"""CLIENT spans whose recording happens after the response: the request path only mints ids.

An outbound request needs exactly one thing from its span before it is sent:
the span's identity, to write into ``traceparent``. Everything else — the SDK
span object, its attributes, the span processors — can wait until the
response has been handed back (:mod:`meshlib.tracing.deferred`). With the
OpenTelemetry SDK that split is worth ~40 µs per request on a slow machine.

How, with the SDK's own semantics kept:

- **ids** come from the provider's own ``IdGenerator`` (so custom generators,
  e.g. X-Ray's time-based trace ids, still apply), drawn on the request path;
  when the span is recorded later, :class:`PresetIds` — installed on
  meshlib's tracer — hands the SDK those same ids, so the recorded span is the
  one the upstream was told about;
- **sampling** is decided on the request path as the tracer's sampler decides,
  and again by the SDK itself when recording. That is only sound for samplers
  whose decision is a function of the parent and the trace id, so this mode
  is used only with the SDK's built-in ``StaticSampler`` (ALWAYS_ON/OFF),
  ``TraceIdRatioBased`` and ``ParentBased`` over those — whose rules
  :func:`compile_sampler` evaluates without their per-call objects; with any
  other sampler (or a non-SDK provider) spans start on the request path as
  usual and only their end is deferred;
- **trace flags** are computed as the SDK computes them (sampled, and W3C's
  random-trace-id bit where the API has it); a test checks that the exported
  span's context equals the ``traceparent`` that was sent.

A span the sampler drops costs its ids and one sampler call, nothing after.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage import _BAGGAGE_KEY
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
)
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from meshlib.tracing.lean_spans import LeanSpanRecorder, lean_recording_supported
from meshlib.tracing.root_ids import RootTraceparents
from meshlib.tracing.url_redaction import redact_url_query

__all__ = ["ClientSpan", "PresetIds", "lazy_recording_supported"]

_SAMPLED = int(TraceFlags.SAMPLED)
_TRACE_FLAGS = [TraceFlags(flags) for flags in range(256)]  # one object per value: made once, not per span
_START_ATTRIBUTES_LIMIT = 4096  # (method, URL, address, port) shapes whose start attributes are kept
_TRACE_ID_MAX = (1 << 128) - 1
_SPAN_ID_MAX = (1 << 64) - 1
_FINAL_ATTRIBUTES_LIMIT = 4096  # final attribute mappings kept (start shape x end outcome)
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_RANDOM_FLAG = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))


class ClientSpan:
    """One CLIENT span as the request path holds it: started (``span``) or still to be recorded."""

    __slots__ = (
        "method",
        "parent",
        "parent_span_context",
        "recording",
        "resend_count",
        "server_address",
        "server_port",
        "span",
        "span_id",
        "start_ns",
        "trace_flags",
        "trace_id",
        "trace_state",
        "url",
    )

    def __init__(
        self, method: str, url: object, start_ns: int, server_address: str | None, server_port: int | None
    ) -> None:
        # What the span's start attributes are made of, kept raw until it is recorded. ``url`` is
        # a yarl URL or a string (str() only when recorded); a missing server address and port
        # are read from the URL then too.
        self.method = method
        self.url = url
        self.start_ns = start_ns
        self.server_address = server_address
        self.server_port = server_port
        self.resend_count = 0
        self.span: Span | None = None  # set when the span was started on the request path
        self.parent: otel_context.Context | None = None
        self.parent_span_context: SpanContext | None = None  # None: a root span (set by LazyClientSpans)
        self.trace_id = 0
        self.span_id = 0
        self.trace_flags = 0
        self.trace_state: TraceState | None = None
        self.recording = False  # True when there is a span to record or end after the request

    def start_attributes(self) -> dict[str, Any]:
        """The HTTP client span attributes known when the request started (semantic conventions).

        A new dict each call; its contents are worked out once per request shape
        (``url.full`` is the costly part: the URL rendered, then redacted).
        """
        key = (self.method, self.url, self.server_address, self.server_port, self.resend_count)
        try:
            return dict(_START_ATTRIBUTES[key])
        except KeyError:
            pass
        except TypeError:  # an unhashable URL-like object
            return self._start_attributes()
        attributes = self._start_attributes()
        if len(_START_ATTRIBUTES) >= _START_ATTRIBUTES_LIMIT:
            _START_ATTRIBUTES.clear()
        _START_ATTRIBUTES[key] = attributes
        return dict(attributes)

    def _start_attributes(self) -> dict[str, Any]:
        url = self.url
        address, port = self.server_address, self.server_port
        if address is None or port is None:
            host, url_port, scheme = getattr(url, "host", None), getattr(url, "port", None), getattr(url, "scheme", "")
            address = address if address is not None else host or ""
            port = port if port is not None else url_port or _DEFAULT_PORTS.get(scheme, 80)
        attributes: dict[str, Any] = {
            "http.request.method": self.method,
            "url.full": _url_full(url),
            "server.address": address,
            "server.port": port,
        }
        if self.resend_count:
            attributes["http.request.resend_count"] = self.resend_count
        return attributes

    def span_context(self) -> SpanContext:
        return _local_span_context(self.trace_id, self.span_id, _TRACE_FLAGS[self.trace_flags & 0xFF], self.trace_state)

    def inject_w3c(self, headers: MutableMapping[str, str], baggage_propagator: TextMapPropagator) -> None:
        """``traceparent`` (+ ``tracestate``, ``baggage``) for this span, written directly."""
        if not self.span_id:  # the API's no-op tracer: nothing to propagate
            return
        headers["traceparent"] = (
            f"00-{self.trace_id.to_bytes(16, 'big').hex()}-{self.span_id.to_bytes(8, 'big').hex()}"
            f"-{_FLAGS_TEXT[self.trace_flags & 0xFF]}"
        )
        if self.trace_state:
            headers["tracestate"] = self.trace_state.to_header()
        parent = self.parent
        if (parent is None or parent) and baggage.get_all(parent):  # an empty context has no baggage
            baggage_propagator.inject(headers)

    def inject_with(self, propagator: TextMapPropagator, headers: MutableMapping[str, str]) -> None:
        """Headers in whatever formats ``propagator`` writes (a custom outbound propagator)."""
        span = self.span if self.span is not None else NonRecordingSpan(self.span_context())
        propagator.inject(headers, context=trace.set_span_in_context(span))


_START_ATTRIBUTES: dict[tuple[object, ...], dict[str, Any]] = {}


def _merged(client_span: ClientSpan, attributes: dict[str, Any]) -> dict[str, Any]:
    """The span's start attributes, then ``attributes``: a key set again moves last, as the SDK's
    ``set_attributes`` does."""
    merged = client_span.start_attributes()
    for name in merged.keys() & attributes.keys():
        del merged[name]
    merged.update(attributes)
    return merged


def _span_context_tuple(
    trace_id: int, span_id: int, trace_flags: TraceFlags, trace_state: TraceState | None
) -> SpanContext:
    """``SpanContext(trace_id, span_id, False, trace_flags, trace_state)`` for ids minted here (never out of
    range), built as its constructor builds it, without the constructor's Python frame."""
    state = DEFAULT_TRACE_STATE if trace_state is None else trace_state
    valid = 0 < trace_id <= _TRACE_ID_MAX and 0 < span_id <= _SPAN_ID_MAX  # as the constructor judges it
    return tuple.__new__(SpanContext, (trace_id, span_id, False, trace_flags, state, valid))


def _span_context_constructor(
    trace_id: int, span_id: int, trace_flags: TraceFlags, trace_state: TraceState | None
) -> SpanContext:
    return SpanContext(trace_id, span_id, False, trace_flags, trace_state)


def _choose_span_context_maker() -> Callable[[int, int, TraceFlags, TraceState | None], SpanContext]:
    """The tuple shortcut when it gives what this API version's constructor gives, else the constructor."""
    samples = [
        (1, 2, _TRACE_FLAGS[1], None), (3 << 100, 4, _TRACE_FLAGS[0], TraceState([("k", "v")])),
        (1 << 128, 5, _TRACE_FLAGS[1], None), (6, 0, _TRACE_FLAGS[1], None),  # invalid: out of range, zero
    ]
    for sample in samples:
        built, expected = _span_context_tuple(*sample), SpanContext(sample[0], sample[1], False, *sample[2:])
        if type(built) is not type(expected) or tuple(built) != tuple(expected) or built.is_valid != expected.is_valid:
            return _span_context_constructor
    return _span_context_tuple


_local_span_context = _choose_span_context_maker()


def _url_full(url: object) -> str:
    """``url.full`` as the semantic conventions want it: credentials (userinfo and credential-carrying
    query values such as ``sig``, ``token``, ``X-Amz-Signature``) replaced by ``REDACTED``."""
    if getattr(url, "user", None) is not None or getattr(url, "password", None) is not None:
        url = url.with_user("REDACTED").with_password("REDACTED")  # type: ignore[attr-defined]
    text = str(url)
    return redact_url_query(text) if "?" in text else text


class PresetIds:
    """An ``IdGenerator`` wrapper that returns preset ids once, then defers to the provider's generator.

    Installed on meshlib's SDK tracer. Presets are per thread: recording runs on
    the event loop's thread, and a tracer shared with another loop's thread
    must not take its ids.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._local = threading.local()

    def preset(self, trace_id: int, span_id: int) -> None:
        self._local.ids = (trace_id, span_id)

    def clear(self) -> None:
        self._local.ids = None

    def generate_span_id(self) -> int:
        ids = getattr(self._local, "ids", None)
        return ids[1] if ids is not None else int(self.inner.generate_span_id())

    def generate_trace_id(self) -> int:
        ids = getattr(self._local, "ids", None)
        return ids[0] if ids is not None else int(self.inner.generate_trace_id())

    def is_trace_id_random(self) -> bool:
        check = getattr(self.inner, "is_trace_id_random", None)
        return bool(check()) if check is not None else False


def lazy_recording_supported(tracer: Any) -> bool:
    """True for an SDK tracer with a deterministic built-in sampler (see the module docstring)."""
    try:
        from opentelemetry.sdk.trace import Tracer as SdkTracer
    except ImportError:
        return False
    if not isinstance(tracer, SdkTracer) or not hasattr(tracer, "id_generator"):
        return False
    return compile_sampler(getattr(tracer, "sampler", None)) is not None


# A built-in sampler's decision as a plain function of (parent span context, trace id) -> sampled.
# The SDK's built-in samplers record exactly what they sample, and take the parent's tracestate.
Decide = Callable[[SpanContext, int], bool]


def compile_sampler(sampler: Any) -> Decide | None:
    """The decision of an SDK built-in sampler, computed without its objects; None if not built-in.

    Mirrors ``StaticSampler``, ``TraceIdRatioBased`` and ``ParentBased`` of the
    OpenTelemetry SDK (tests compare exported spans with what was sent upstream).
    """
    try:
        from opentelemetry.sdk.trace.sampling import Decision, ParentBased, StaticSampler, TraceIdRatioBased
    except ImportError:
        return None
    if type(sampler) is StaticSampler:
        decision = getattr(sampler, "_decision", None)  # RECORD_ONLY records what it does not sample: no
        if decision not in (Decision.RECORD_AND_SAMPLE, Decision.DROP):
            return None
        sampled = decision is Decision.RECORD_AND_SAMPLE
        return lambda parent, trace_id: sampled
    if type(sampler) is TraceIdRatioBased:
        bound, limit = sampler.bound, sampler.TRACE_ID_LIMIT
        return lambda parent, trace_id: trace_id & limit < bound
    if isinstance(sampler, ParentBased) and type(sampler).should_sample is ParentBased.should_sample:
        parts = [compile_sampler(getattr(sampler, name, None)) for name in (
            "_root", "_remote_parent_sampled", "_remote_parent_not_sampled",
            "_local_parent_sampled", "_local_parent_not_sampled",
        )]
        if any(part is None for part in parts):
            return None
        root, remote_sampled, remote_not_sampled, local_sampled, local_not_sampled = parts

        def parent_based(parent: SpanContext, trace_id: int) -> bool:
            if not parent.is_valid:
                return root(parent, trace_id)  # type: ignore[misc]
            if parent.is_remote:
                chosen = remote_sampled if parent.trace_flags.sampled else remote_not_sampled
            else:
                chosen = local_sampled if parent.trace_flags.sampled else local_not_sampled
            return chosen(parent, trace_id)  # type: ignore[misc]

        return parent_based
    return None


_FLAGS_TEXT = [f"{flags:02x}" for flags in range(256)]


def _default_random_bits(generator: Any) -> Callable[[int], int] | None:
    """``random.getrandbits`` when ``generator`` is exactly the SDK's ``RandomIdGenerator``, else None."""
    try:
        from opentelemetry.sdk.trace import id_generator
    except ImportError:
        return None
    if type(generator) is not id_generator.RandomIdGenerator:
        return None
    return random.getrandbits  # what RandomIdGenerator draws from (the ``random`` module's generator)


def _root_decision(sampler: Any) -> bool | None:
    """The decision for a span without a parent when it does not depend on the trace id (ALWAYS_ON/OFF)."""
    try:
        from opentelemetry.sdk.trace.sampling import Decision, ParentBased, StaticSampler
    except ImportError:
        return None
    if isinstance(sampler, ParentBased) and type(sampler).should_sample is ParentBased.should_sample:
        sampler = getattr(sampler, "_root", None)
    if type(sampler) is StaticSampler and sampler._decision in (Decision.RECORD_AND_SAMPLE, Decision.DROP):
        return bool(sampler._decision is Decision.RECORD_AND_SAMPLE)
    return None


def _current_context_reader() -> Callable[[], otel_context.Context]:
    """The current OpenTelemetry context's getter: the context variable itself when that is the runtime."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    getter = getattr(variable, "get", None)
    if type(runtime).__name__ == "ContextVarsRuntimeContext" and callable(getter):
        return getter  # type: ignore[no-any-return]
    return otel_context.get_current


class LazyClientSpans:
    """Mints :class:`ClientSpan` identities on the request path and records them later."""

    __slots__ = (
        "_current_context",
        "_decide",
        "_final_attributes",
        "_ids",
        "_inner_ids",
        "_lean",
        "_new_roots",
        "_random_bits",
        "_random_ids",
        "_root_decision",
        "_root_flags",
        "_tracer",
        "_unsampled_child",
    )

    def __init__(self, tracer: Any) -> None:
        ids = tracer.id_generator
        if not isinstance(ids, PresetIds):  # the SDK caches tracers: a second mesh finds it installed
            ids = tracer.id_generator = PresetIds(ids)
        self._tracer = tracer
        self._ids = ids
        self._inner_ids = ids.inner
        decide = compile_sampler(tracer.sampler)
        assert decide is not None, "LazyClientSpans needs a built-in sampler (lazy_recording_supported)"
        self._decide = decide
        self._random_ids = bool(_RANDOM_FLAG) and ids.is_trace_id_random()
        # The SDK's default generator draws from the ``random`` module: drawn here directly (same source).
        self._random_bits = _default_random_bits(ids.inner)
        self._current_context = _current_context_reader()
        self._root_decision = _root_decision(tracer.sampler)  # a root span's decision, when it is a constant
        # When the sampler's verdict on a root is a constant and ids come from ``random``, a root span's
        # ids and ``traceparent`` are made in batches (begin_or_propagate); None otherwise.
        self._root_flags = (_SAMPLED if self._root_decision else 0) | (_RANDOM_FLAG if self._random_ids else 0)
        self._new_roots = (
            RootTraceparents(self._random_bits, _FLAGS_TEXT[self._root_flags])
            if self._root_decision is not None and self._random_bits is not None
            else None
        )
        # (parent, "00-<trace id>-", "-<flags>", tracestate) of the last unsampled child of a parent.
        self._unsampled_child: tuple[SpanContext, str, str, str] = (INVALID_SPAN_CONTEXT, "", "", "")
        # Recorded spans are built as the exporter reads them when the processors allow it.
        self._lean = LeanSpanRecorder(tracer) if lean_recording_supported(tracer) else None
        # (id(end attributes), start attribute parts) -> (end attributes, final read-only attributes).
        self._final_attributes: dict[tuple[object, ...], tuple[dict[str, Any], Any]] = {}

    def begin(self, parent: otel_context.Context, client_span: ClientSpan) -> ClientSpan:
        """Give ``client_span`` (its start fields filled) an identity and a sampling decision, now."""
        parent_context = trace.get_current_span(parent).get_span_context()
        if parent_context.is_valid:
            trace_id = parent_context.trace_id
            random_flag = int(parent_context.trace_flags) & _RANDOM_FLAG
            client_span.trace_state = parent_context.trace_state
            client_span.parent_span_context = parent_context
        else:
            trace_id = self._inner_ids.generate_trace_id()
            random_flag = _RANDOM_FLAG if self._random_ids else 0
        sampled = self._decide(parent_context, trace_id)
        client_span.parent = parent
        client_span.trace_id = trace_id
        client_span.span_id = self._inner_ids.generate_span_id()
        client_span.trace_flags = (_SAMPLED if sampled else 0) | random_flag
        client_span.recording = sampled
        return client_span

    def begin_or_propagate(  # noqa: PLR0917 - the request's parts, as ClientSpan takes them
        self, method: str, url: object, headers: MutableMapping[str, str], baggage_propagator: TextMapPropagator,
        server_address: str | None = None, server_port: int | None = None,
    ) -> ClientSpan | None:
        """The request path's whole tracing work when the outbound propagator is W3C's (the default).

        Sampled out: a span id is minted and ``traceparent`` (+ ``tracestate``,
        ``baggage``) written straight from the current context — no span object,
        no context built — and None is returned: nothing is left to record.
        Sampled: the :class:`ClientSpan` to observe and record, its headers written.
        """
        context = self._current_context()
        current = context.get(_SPAN_KEY)
        parent = (
            current.get_span_context() if current is not None and isinstance(current, Span) else INVALID_SPAN_CONTEXT
        )
        new_roots = self._new_roots
        if new_roots is not None and (parent is INVALID_SPAN_CONTEXT or not parent.is_valid):
            # A new root (the sampler's verdict is known): its ids and header come ready-made in batches.
            root: ClientSpan | None = None
            if self._root_decision:
                traceparent, trace_id, span_id = new_roots.next_with_ids()
                root = ClientSpan(method, url, time.time_ns(), server_address, server_port)
                root.parent = context
                root.trace_id = trace_id
                root.span_id = span_id
                root.trace_flags = self._root_flags
                root.recording = True
                headers["traceparent"] = traceparent
            else:
                headers["traceparent"] = new_roots.next()  # dropped: the header is all there is of it
            if context.get(_BAGGAGE_KEY):
                baggage_propagator.inject(headers, context=context)
            return root
        cached = self._unsampled_child
        if cached[0] is parent and parent is not INVALID_SPAN_CONTEXT:
            # The same unsampled parent as the last request (a handler's calls): its trace id's text,
            # flags, tracestate and the sampler's verdict (a function of the parent alone) are known.
            _, prefix, suffix, trace_state_header = cached
            self._write_unsampled(headers, prefix, suffix, trace_state_header, context, baggage_propagator)
            return None
        random_bits = self._random_bits
        if parent is not INVALID_SPAN_CONTEXT and parent.is_valid:
            trace_id = parent.trace_id
            random_flag = int(parent.trace_flags) & _RANDOM_FLAG
            trace_state: TraceState | None = parent.trace_state
        else:
            parent = INVALID_SPAN_CONTEXT
            trace_id = random_bits(128) if random_bits is not None else self._inner_ids.generate_trace_id()
            while not trace_id:  # as the SDK's RandomIdGenerator: never the invalid id
                trace_id = self._inner_ids.generate_trace_id()
            random_flag = _RANDOM_FLAG if self._random_ids else 0
            trace_state = None
        root_decision = self._root_decision
        if root_decision is not None and parent is INVALID_SPAN_CONTEXT:
            sampled = root_decision
        else:
            sampled = self._decide(parent, trace_id)
        if sampled:
            client_span = ClientSpan(method, url, time.time_ns(), server_address, server_port)
            client_span.parent = context
            client_span.trace_id = trace_id
            client_span.span_id = self._inner_ids.generate_span_id()
            client_span.trace_flags = _SAMPLED | random_flag
            client_span.recording = True
            if parent is not INVALID_SPAN_CONTEXT:
                client_span.trace_state = trace_state
                client_span.parent_span_context = parent
            client_span.inject_w3c(headers, baggage_propagator)
            return client_span
        # int.to_bytes().hex(): a third of the instructions of a zero-padded hex format spec.
        prefix = f"00-{trace_id.to_bytes(16, 'big').hex()}-"
        suffix = f"-{_FLAGS_TEXT[random_flag]}"
        trace_state_header = trace_state.to_header() if trace_state else ""
        if parent is not INVALID_SPAN_CONTEXT:
            self._unsampled_child = (parent, prefix, suffix, trace_state_header)  # one tuple: atomic
        self._write_unsampled(headers, prefix, suffix, trace_state_header, context, baggage_propagator)
        return None

    def _write_unsampled(  # noqa: PLR0917 - the parts begin_or_propagate has worked out
        self, headers: MutableMapping[str, str], prefix: str, suffix: str, trace_state_header: str,
        context: otel_context.Context, baggage_propagator: TextMapPropagator,
    ) -> None:
        """An unsampled span's headers: ``traceparent`` with a fresh span id, ``tracestate``, ``baggage``."""
        headers["traceparent"] = f"{prefix}{self._span_id_hex()}{suffix}"
        if trace_state_header:
            headers["tracestate"] = trace_state_header
        if context.get(_BAGGAGE_KEY):
            baggage_propagator.inject(headers, context=context)

    def _span_id_hex(self) -> str:
        random_bits = self._random_bits
        span_id = random_bits(64) if random_bits is not None else self._inner_ids.generate_span_id()
        while not span_id:  # as the SDK's RandomIdGenerator: never the invalid id
            span_id = self._inner_ids.generate_span_id()
        return span_id.to_bytes(8, "big").hex()

    def _final_attributes_of(self, client_span: ClientSpan, attributes: dict[str, Any], lean: LeanSpanRecorder) -> Any:
        """The span's final attributes made from shared ``attributes`` (one object per route and outcome, never
        changed), memoised by that object's identity and the span's start attribute parts."""
        key = (
            id(attributes), client_span.method, client_span.url, client_span.server_address,
            client_span.server_port, client_span.resend_count,
        )
        try:
            found = self._final_attributes.get(key)
        except TypeError:  # an unhashable URL-like object: nothing is memoised for it
            return lean.final_attributes(_merged(client_span, attributes))
        if found is None or found[0] is not attributes:
            found = (attributes, lean.final_attributes(_merged(client_span, attributes)))  # holds its key's object
            if len(self._final_attributes) >= _FINAL_ATTRIBUTES_LIMIT:
                self._final_attributes.clear()
            self._final_attributes[key] = found
        return found[1]

    def record(
        self, client_span: ClientSpan, attributes: dict[str, Any], end_ns: int, error: bool, *, shared: bool = False
    ) -> None:
        """Create the SDK span with the ids already sent upstream, and end it (run deferred).

        ``shared``: ``attributes`` is a memoised object other spans will bring again (never changed), so the
        final attributes made from it are memoised too.
        """
        if not client_span.recording:
            return
        lean = self._lean
        if lean is not None and lean.still_supported():
            final = self._final_attributes_of(client_span, attributes, lean) if shared else (
                lean.final_attributes(_merged(client_span, attributes))
            )
            lean.record(
                client_span.method, client_span.span_context(), client_span.parent_span_context, final,
                client_span.start_ns, end_ns, error,
            )
            return
        from opentelemetry.trace import Status, StatusCode

        ids = self._ids
        ids.preset(client_span.trace_id, client_span.span_id)
        try:
            span = self._tracer.start_span(
                client_span.method, context=client_span.parent, kind=SpanKind.CLIENT,
                attributes={**client_span.start_attributes(), **attributes}, start_time=client_span.start_ns,
            )
        finally:
            ids.clear()
        if error:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_ns)
