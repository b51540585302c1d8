"""Telemetry of one outbound aiohttp request: its CLIENT span and its record for the sinks.

The client middleware (:mod:`meshlib.aiohttp.client`) and its fused happy path
(:mod:`meshlib.aiohttp.fused`) call :func:`begin_observation` before routing and
:func:`end_observation` when the request is over; everything else (the span's
recording, the record for metrics and access logs) runs deferred, off the
response path (:mod:`meshlib.tracing.deferred`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs
from multidict import CIMultiDict
from yarl import URL

from meshlib.aiohttp.local_reply import LOCAL_REPLY_HEADER
from meshlib.config.model import Endpoint
from meshlib.tracing.observation import Observation
from meshlib.tracing.record import deliver_outbound

if TYPE_CHECKING:
    from meshlib.tracing.record import TelemetrySink
    from meshlib.tracing.telemetry import Telemetry


def begin_observation(req: ClientRequest, telemetry: Telemetry) -> Observation | None:
    """Begin observing an outbound request: its start, and its CLIENT span's context on the wire.

    None when there is nothing to observe: tracing only (no sink) and the span
    sampled out — its ``traceparent`` is already on the request, and the request
    then costs what it costs with telemetry off.
    """
    tracing = telemetry.tracing
    begun = None
    if tracing is not None and not telemetry.sinks:  # tracing alone: a sampled-out span leaves nothing to observe
        begun = tracing.begin_client_or_propagate(req.method, req.url, req.headers)
        if begun is None:
            return None
    observation = Observation()
    observation.telemetry = telemetry
    url = observation.url = req.url  # as the caller asked (the attempt later dials an endpoint's URL)
    observation.start_ns = begun.start_ns if begun is not None else time.time_ns()
    observation.started = time.perf_counter()
    if begun is None and tracing is not None:  # with a sink: a span (sampled or not) for the record's context
        begun = tracing.begin_client(req.method, url, observation.start_ns)
        tracing.inject(begun, req.headers)
    observation.span = begun
    return observation


def end_observation(observation: Observation, req: ClientRequest, response: ClientResponse | None) -> None:
    """The request is over: take its timestamps now; everything else happens after the response.

    What the deferred part needs of the request and the response is taken here, so that neither is kept
    alive until the batch runs: held there, they would outlive the request (and a response its body) and
    burden the garbage collector with objects that would otherwise be freed at once.
    """
    duration_s = observation.duration_s = time.perf_counter() - observation.started
    observation.end_ns = observation.start_ns + int(duration_s * 1e9)
    telemetry = observation.telemetry
    assert telemetry is not None
    client_span = observation.span
    sinks = telemetry.sinks
    if sinks or (client_span is not None and client_span.recording):  # sampled out, no sink: nothing
        local_flag = None
        if response is not None:
            observation.status = response.status
            local_flag = response.headers.get(LOCAL_REPLY_HEADER)
        request: _RequestParts | None = None
        if sinks:
            headers = req.headers
            request = (req.method, headers.get(hdrs.X_REQUEST_ID), headers.get(hdrs.USER_AGENT),
                       _content_length(headers))
        telemetry.deferred.defer(_finish, observation, local_flag, request)


# What a record needs of the request: method, x-request-id, user-agent, request bytes.
_RequestParts = tuple[str, "str | None", "str | None", int]


def _finish(observation: Observation, local_flag: str | None, request: _RequestParts | None) -> None:
    """How the request ended (status, Envoy response flags), into its span and record (run deferred)."""
    flags = local_flag or "-"
    if observation.delay_injected:
        flags = "DI" if flags == "-" else f"{flags},DI"
    if observation.attempts > 1 and (observation.status >= 500 or observation.status == 0):
        flags = "URX" if flags == "-" else f"{flags},URX"  # the retries ran out on a failure
    observation.flags = flags
    telemetry = observation.telemetry
    assert telemetry is not None
    tracing = telemetry.tracing
    client_span = observation.span
    if tracing is not None and client_span is not None and client_span.recording:
        tracing.finish_client(client_span, observation)
    if telemetry.sinks and request is not None:
        _report(telemetry.sinks, observation, request)


async def traced_retry(
    req: ClientRequest, handler: ClientHandlerType, endpoint: Endpoint, attempt: int, observation: Observation
) -> ClientResponse:
    """A retry as its own CLIENT span (``http.request.resend_count``); the upstream sees its context."""
    telemetry = observation.telemetry
    tracing = telemetry.tracing if telemetry is not None else None
    assert telemetry is not None and tracing is not None and observation.span is not None
    span = tracing.begin_attempt(observation.span, attempt, time.time_ns())
    tracing.inject(span, req.headers)
    status = 0
    try:
        response = await handler(req)
        status = response.status
        return response
    finally:
        telemetry.deferred.defer(tracing.finish_attempt, span, time.time_ns(), status, endpoint.key)


def _report(sinks: tuple[TelemetrySink, ...], observation: Observation, request: _RequestParts) -> None:
    """Build the request's record and hand it to the sinks."""
    method, request_id, user_agent, request_bytes = request
    url = observation.url
    assert isinstance(url, URL)
    deliver_outbound(sinks, observation.outbound_record(
        start_time_unix_ns=observation.start_ns,
        duration_s=observation.duration_s,
        method=method,
        scheme=url.scheme,
        authority=url.raw_authority,
        path=url.raw_path,
        status=observation.status,
        flags=observation.flags,
        request_id=request_id,
        user_agent=user_agent,
        request_bytes=request_bytes,
    ))


def _content_length(headers: CIMultiDict[str]) -> int:
    value = headers.get(hdrs.CONTENT_LENGTH)
    return int(value) if value and value.isdigit() else 0
