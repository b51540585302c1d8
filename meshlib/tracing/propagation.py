"""Automatic trace-header propagation: what Istio asks every application to do by hand.

Istio's sidecars can only join spans into one trace if the application copies
the trace headers of each inbound request onto every outbound request it
causes. meshlib does that copy itself: ``mesh.server_middleware()`` captures
the inbound request's propagation headers into a context variable, and the
client middleware writes them onto every outbound call made while handling
it. Context variables follow ``asyncio.create_task``/``gather``, so a handler
that fans out keeps one trace in every branch.

Headers carried (semantics.md §7): ``x-request-id``; W3C ``traceparent``,
``tracestate``, ``baggage``; B3 ``b3``, ``x-b3-*``; ``x-ot-span-context``;
``grpc-trace-bin``; ``x-cloud-trace-context``; ``sw8``; Datadog ``x-datadog-*``.
``x-request-id`` is generated at the edge when the inbound request has none.

When OpenTelemetry tracing is on, the trace-context headers are written by the
OpenTelemetry propagators instead (a new span id per hop, same trace id), and
only the others are copied as they came.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Mapping, MutableMapping

from meshlib.request_id import new_request_id

REQUEST_ID = "x-request-id"

TRACE_CONTEXT_HEADERS = (
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
)
OTHER_HEADERS = (
    "baggage",
    "x-ot-span-context",
    "grpc-trace-bin",
    "x-cloud-trace-context",
    "sw8",
)
PROPAGATED_HEADERS = (REQUEST_ID, *TRACE_CONTEXT_HEADERS, *OTHER_HEADERS)
_DATADOG_PREFIX = "x-datadog-"

# The propagation headers of the inbound request being handled: ((name, value), ...).
INBOUND_HEADERS: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "meshlib_inbound_headers", default=()
)


def extract(headers: Mapping[str, str], keys: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """The propagation headers of an inbound request, ``x-request-id`` first (generated if absent).

    ``headers`` is case-insensitive (aiohttp's ``CIMultiDictProxy``); ``keys``
    are the header names actually present, scanned once for ``x-datadog-*``.
    """
    request_id = headers.get(REQUEST_ID) or new_request_id()
    carried = [(REQUEST_ID, request_id)]
    for name in PROPAGATED_HEADERS[1:]:
        value = headers.get(name)
        if value is not None:
            carried.append((name, value))
    for key in keys:
        lowered = key.lower()
        if lowered.startswith(_DATADOG_PREFIX):
            carried.append((lowered, headers[key]))
    return tuple(carried)


def inject(headers: MutableMapping[str, str], carried: tuple[tuple[str, str], ...], *, skip_trace: bool) -> None:
    """Copy ``carried`` onto an outbound request; headers the caller set explicitly win.

    ``skip_trace`` leaves the trace-context headers to OpenTelemetry's propagators.
    """
    for name, value in carried:
        if skip_trace and name in _TRACE_CONTEXT_SET:
            continue
        if name not in headers:
            headers[name] = value


_TRACE_CONTEXT_SET = frozenset(TRACE_CONTEXT_HEADERS)
