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
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import get_global_textmap
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

__all__ = ["Tracing", "default_propagator"]


def default_propagator() -> TextMapPropagator:
    """W3C trace context + baggage, plus B3 (single and multi) when its package is installed.

    Order matters for extraction: the last propagator that finds a context wins,
    so B3 goes first and W3C ``traceparent`` takes precedence when both came.
    """
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagators: list[TextMapPropagator] = []
    try:
        from opentelemetry.propagators.b3 import B3MultiFormat

        propagators.append(B3MultiFormat())
    except ImportError:  # the `otel` extra brings it; without it B3 headers are still copied as-is
        pass
    propagators += [TraceContextTextMapPropagator(), W3CBaggagePropagator()]
    return CompositePropagator(propagators)


def _w3c_injector() -> TextMapPropagator:
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


class Tracing:
    """Starts and ends the mesh's spans; one per mesh."""

    __slots__ = ("injector", "propagator", "tracer")

    def __init__(
        self, tracer_provider: TracerProvider | None = None, propagator: TextMapPropagator | None = None
    ) -> None:
        from meshlib import __version__

        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self.tracer = provider.get_tracer("meshlib", __version__)
        self.propagator = propagator if propagator is not None else default_propagator()
        # Outbound: W3C trace context (+ baggage) only, unless a propagator was chosen —
        # every format injected costs per request, and W3C is what Istio/Envoy read by default.
        self.injector = propagator if propagator is not None else _w3c_injector()

    @staticmethod
    def global_propagator() -> TextMapPropagator:
        return get_global_textmap()

    # ------------------------------------------------------------------ server side

    def start_server(
        self, method: str, scheme: str, path: str, headers: Mapping[str, str], client_address: str | None
    ) -> tuple[Span, object]:
        """Start the SERVER span and make it current; returns ``(span, token)`` for :meth:`end_server`."""
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
    def end_server(span: Span, token: object, method: str, status: int, route: str | None) -> None:
        span.set_attribute("http.response.status_code", status)
        if route:
            span.set_attribute("http.route", route)
            span.update_name(f"{method} {route}")  # "GET /orders/{id}": low-cardinality
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", str(status))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ client side

    def start_client(self, method: str, url_full: str, server_address: str, server_port: int) -> Span:
        """The CLIENT span of one outbound request, child of the current span."""
        return self.tracer.start_span(
            method,
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": method,
                "url.full": url_full,
                "server.address": server_address,
                "server.port": server_port,
            },
        )

    def start_attempt(self, parent: Span, method: str, attempt: int) -> Span:
        """A child CLIENT span for retry ``attempt`` (2, 3, …)."""
        return self.tracer.start_span(
            method,
            context=trace.set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": method, "http.request.resend_count": attempt - 1},
        )

    def inject(self, span: Span, headers: MutableMapping[str, str]) -> None:
        """Write ``span``'s context into outbound headers (traceparent, b3, baggage…)."""
        self.injector.inject(headers, context=trace.set_span_in_context(span))

    @staticmethod
    def end_client(
        span: Span,
        status: int,
        *,
        flags: str,
        attempts: int,
        route: str | None,
        cluster: str | None,
        endpoint: str | None,
    ) -> None:
        # One set_attributes call: the SDK takes its span lock once per call.
        attributes: dict[str, Any] = {"meshlib.attempts": attempts}
        if status:
            attributes["http.response.status_code"] = status
        if attempts > 1:
            attributes["http.request.resend_count"] = attempts - 1
        if flags != "-":
            attributes["meshlib.response_flags"] = flags
            if "FI" in flags or "DI" in flags:
                attributes["meshlib.fault"] = flags
        if route is not None:
            attributes["meshlib.route"] = route
        if cluster is not None:
            attributes["meshlib.cluster"] = cluster
        if endpoint is not None:
            attributes["meshlib.endpoint"] = endpoint
            attributes["network.peer.address"] = endpoint.rpartition(":")[0]
        if status == 0 or status >= 500:
            span.set_status(Status(StatusCode.ERROR))
            attributes["error.type"] = str(status) if status else "request_failed"
        span.set_attributes(attributes)
        span.end()

    @staticmethod
    def end_attempt(span: Span, status: int, endpoint: str | None) -> None:
        if status:
            span.set_attribute("http.response.status_code", status)
        if endpoint is not None:
            span.set_attribute("meshlib.endpoint", endpoint)
        if status == 0 or status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
