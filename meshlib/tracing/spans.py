"""OpenTelemetry spans for the mesh: a SERVER span per inbound, a CLIENT span per outbound request.

Only ``opentelemetry-api`` is needed to import this module; spans are
recorded when an SDK ``TracerProvider`` is given (or set globally). Built only
when tracing is enabled (:meth:`meshlib.Mesh.enable_tracing`), so with tracing
off the request path pays one attribute check.

Span shape:

- SERVER span per inbound request, parent extracted from the inbound headers
  (W3C trace context, baggage, and B3 single/multi when
  ``opentelemetry-propagator-b3`` is installed — so a B3-only caller and a W3C
  callee share one trace). Outbound requests carry W3C ``traceparent``
  (+ ``baggage``) — pass ``propagator=`` to inject other formats too.
- CLIENT span per outbound request through the mesh, child of whatever span
  is current (the SERVER span across ``create_task``/``gather``); it carries
  the first attempt. Each retry gets its own child CLIENT span with
  ``http.request.resend_count`` (stable HTTP semantic conventions), and the
  upstream sees that attempt's context. ``meshlib.*`` attributes say route,
  cluster, endpoint, attempts, fault and response flags.

Cost: spans are finished off the response path (:mod:`meshlib.tracing.deferred`),
and with the SDK's built-in samplers a CLIENT span is only minted on the
request path and recorded afterwards (:mod:`meshlib.tracing.client_spans`) —
with the SDK's own batch/simple processors as the read-only span the exporter
receives, without the SDK's live span object (:mod:`meshlib.tracing.lean_spans`).
A span the sampler drops is only ids and ``traceparent``
(:meth:`Tracing.begin_client_or_propagate`); its retries then carry the first
attempt's context (there is no recorded span for them to be children of).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagate import get_global_textmap
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import NonRecordingSpan, Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from meshlib.tracing.client_spans import ClientSpan, LazyClientSpans, lazy_recording_supported

if TYPE_CHECKING:
    from meshlib.tracing.observation import Observation

__all__ = ["Tracing", "default_propagator"]


def default_propagator() -> TextMapPropagator:
    """W3C trace context + baggage, plus B3 (single and multi) when its package is installed.

    Order matters for extraction: the last propagator that finds a context wins,
    so B3 goes first and W3C ``traceparent`` takes precedence when both came.
    """
    propagators: list[TextMapPropagator] = []
    try:
        from opentelemetry.propagators.b3 import B3MultiFormat

        propagators.append(B3MultiFormat())
    except ImportError:  # the `otel` extra brings it; without it B3 headers are still copied as-is
        pass
    propagators += [TraceContextTextMapPropagator(), W3CBaggagePropagator()]
    return CompositePropagator(propagators)


# The default outbound propagator: W3C trace context + baggage. ``Tracing.inject`` recognises it and
# writes the same headers itself; the object is still what ``Tracing.injector`` exposes.
_BAGGAGE = W3CBaggagePropagator()
_W3C_INJECTOR: TextMapPropagator = CompositePropagator([TraceContextTextMapPropagator(), _BAGGAGE])


class Tracing:
    """Starts and ends the mesh's spans; one per mesh."""

    __slots__ = ("_lazy", "injector", "propagator", "tracer")

    def __init__(
        self, tracer_provider: TracerProvider | None = None, propagator: TextMapPropagator | None = None
    ) -> None:
        from meshlib import __version__

        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self.tracer = provider.get_tracer("meshlib", __version__)
        self.propagator = propagator if propagator is not None else default_propagator()
        # Outbound: W3C trace context (+ baggage) only, unless a propagator was chosen —
        # every format injected costs per request, and W3C is what Istio/Envoy read by default.
        self.injector = propagator if propagator is not None else _W3C_INJECTOR
        self._lazy = LazyClientSpans(self.tracer) if lazy_recording_supported(self.tracer) else None

    @staticmethod
    def global_propagator() -> TextMapPropagator:
        return get_global_textmap()

    # ------------------------------------------------------------------ server side

    def start_server(
        self, method: str, scheme: str, path: str, headers: Mapping[str, str], client_address: str | None
    ) -> tuple[Span, object]:
        """Start the SERVER span and make it current; returns ``(span, token)``.

        Then :meth:`detach_server` inline and :meth:`finish_server` deferred.
        """
        parent = self.propagator.extract(headers)
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": path,
            "url.scheme": scheme,
        }
        if client_address:
            attributes["client.address"] = client_address
        span = self.tracer.start_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    @staticmethod
    def detach_server(token: object) -> None:
        """Make the SERVER span's parent current again (inline: the context is the caller's)."""
        otel_context.detach(token)  # type: ignore[arg-type]

    @staticmethod
    def finish_server(span: Span, end_ns: int, method: str, status: int, route: str | None) -> None:
        """End the SERVER span at ``end_ns`` (run deferred, off the response path)."""
        attributes: dict[str, Any] = {"http.response.status_code": status}
        if route:
            attributes["http.route"] = route
            span.update_name(f"{method} {route}")  # "GET /orders/{id}": low-cardinality
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
            attributes["error.type"] = str(status)
        span.set_attributes(attributes)
        span.end(end_ns)

    # ------------------------------------------------------------------ client side

    def begin_client(
        self, method: str, url: object, start_ns: int, server_address: str | None = None,
        server_port: int | None = None,
    ) -> ClientSpan:
        """The CLIENT span of one outbound request, child of the current span.

        ``url`` gives ``url.full`` (and ``server.address``/``server.port`` when not
        passed). With the SDK and a built-in sampler only the span's identity is made
        now; it is recorded when :meth:`finish_client` runs (:mod:`meshlib.tracing.client_spans`).
        """
        client_span = ClientSpan(method, url, start_ns, server_address, server_port)
        if self._lazy is not None:
            return self._lazy.begin(otel_context.get_current(), client_span)
        return self._started(client_span, None)

    def begin_client_or_propagate(
        self, method: str, url: object, headers: MutableMapping[str, str], server_address: str | None = None,
        server_port: int | None = None,
    ) -> ClientSpan | None:
        """Begin the CLIENT span of one outbound request and write its context into ``headers``.

        Returns None when the span is not recorded (sampled out): its ids and
        ``traceparent`` are on the request and nothing needs finishing — with the
        SDK's built-in samplers and the default W3C propagation that costs a few
        thousand instructions. Otherwise the started :class:`ClientSpan` (its
        ``start_ns`` taken now), to be finished with :meth:`finish_client`::

            span = tracing.begin_client_or_propagate("GET", url, headers)
            if span is not None:
                ...  # observe the request, then finish_client(span, observation)
        """
        if self._lazy is not None and self.injector is _W3C_INJECTOR:
            return self._lazy.begin_or_propagate(method, url, headers, _BAGGAGE, server_address, server_port)
        client_span = self.begin_client(method, url, time.time_ns(), server_address, server_port)
        self.inject(client_span, headers)
        if client_span.span is not None and not client_span.span.is_recording():
            return None  # a custom sampler dropped it: its context is on the wire, ending it does nothing
        return client_span if client_span.recording else None

    def begin_attempt(self, parent: ClientSpan, attempt: int, start_ns: int) -> ClientSpan:
        """A child CLIENT span for retry ``attempt`` (2, 3, …) of ``parent``'s request."""
        client_span = ClientSpan(parent.method, parent.url, start_ns, parent.server_address, parent.server_port)
        client_span.resend_count = attempt - 1
        parent_span = parent.span if parent.span is not None else NonRecordingSpan(parent.span_context())
        context = trace.set_span_in_context(parent_span)
        if self._lazy is not None:
            return self._lazy.begin(context, client_span)
        return self._started(client_span, context)

    def _started(self, client_span: ClientSpan, context: otel_context.Context | None) -> ClientSpan:
        """Start the span now (a non-SDK provider or a sampler that may read attributes)."""
        span = self.tracer.start_span(
            client_span.method, context=context, kind=SpanKind.CLIENT, attributes=client_span.start_attributes()
        )
        client_span.span = span
        client_span.recording = True  # started: it must be ended, whatever the SDK decided
        span_context = span.get_span_context()
        client_span.trace_id, client_span.span_id = span_context.trace_id, span_context.span_id
        client_span.trace_flags, client_span.trace_state = int(span_context.trace_flags), span_context.trace_state
        return client_span

    def inject(self, client_span: ClientSpan, headers: MutableMapping[str, str]) -> None:
        """Write the span's context into outbound headers (traceparent, baggage…; b3 if configured)."""
        if self.injector is _W3C_INJECTOR:
            client_span.inject_w3c(headers, _BAGGAGE)  # the default, without the propagator API's overhead
        else:
            client_span.inject_with(self.injector, headers)

    def finish_client(self, client_span: ClientSpan, observation: Observation) -> None:
        """Record the CLIENT span as the request ended, with what it learned (run deferred)."""
        decision = observation.decision
        memo = decision.telemetry_memo if decision is not None else None
        if memo is None:  # a decision made for this request alone
            attributes, error = _end_attributes(observation)
            self._end(client_span, attributes, observation.end_ns, error)
            return
        # A shared decision (the fused path's): the end attributes are a function of it and of these, so they
        # are memoised with it — shared, never changed afterwards (a span keeps them read-only, the SDK copies).
        key = (observation.status, observation.attempts, observation.flags, observation.cluster_override,
               observation.upstream_host)
        found = memo.get(key)
        if found is None:
            if len(memo) >= _END_ATTRIBUTES_PER_DECISION:
                memo.clear()
            found = memo[key] = _end_attributes(observation)
        self._end(client_span, found[0], observation.end_ns, found[1], shared=True)

    def finish_attempt(self, client_span: ClientSpan, end_ns: int, status: int, endpoint: str | None) -> None:
        """Record one retry's CLIENT span (run deferred)."""
        attributes: dict[str, Any] = {}
        if status:
            attributes["http.response.status_code"] = status
        if endpoint is not None:
            attributes["meshlib.endpoint"] = endpoint
        error = status == 0 or status >= 500
        if error:
            attributes["error.type"] = str(status) if status else "request_failed"
        self._end(client_span, attributes, end_ns, error)

    def _end(
        self, client_span: ClientSpan, attributes: dict[str, Any], end_ns: int, error: bool, *, shared: bool = False
    ) -> None:
        """``shared``: ``attributes`` is one memoised object that later spans will bring again."""
        span = client_span.span
        if span is None:
            assert self._lazy is not None
            self._lazy.record(client_span, attributes, end_ns, error, shared=shared)
            return
        if error:
            span.set_status(Status(StatusCode.ERROR))
        span.set_attributes(attributes)  # one call: the SDK takes its span lock once per call
        span.end(end_ns)


_END_ATTRIBUTES_PER_DECISION = 64  # (status, attempts, flags, cluster, endpoint) outcomes kept per decision


def _end_attributes(observation: Observation) -> tuple[dict[str, Any], bool]:
    """The CLIENT span's attributes learned by the end of the request, and whether it is an error."""
    attempts = max(observation.attempts, 1)
    status = observation.status
    flags = observation.flags
    endpoint = observation.upstream_host
    attributes: dict[str, Any] = {"meshlib.attempts": attempts}
    if status:
        attributes["http.response.status_code"] = status
    if attempts > 1:
        attributes["http.request.resend_count"] = attempts - 1
    if flags != "-":
        attributes["meshlib.response_flags"] = flags
        if "FI" in flags or "DI" in flags:
            attributes["meshlib.fault"] = flags
    route_name = observation.route_name
    if route_name is not None:
        attributes["meshlib.route"] = route_name
    cluster = observation.cluster
    if cluster is not None:
        attributes["meshlib.cluster"] = cluster
    if endpoint is not None:
        attributes["meshlib.endpoint"] = endpoint
        attributes["network.peer.address"] = endpoint.rpartition(":")[0]
    error = status == 0 or status >= 500
    if error:
        attributes["error.type"] = str(status) if status else "request_failed"
    return attributes, error
