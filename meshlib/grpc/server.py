"""gRPC server side: the inbound call's context for the calls its handler makes, plus inbound policy.

:class:`MeshServerInterceptor` (a ``grpc.aio.ServerInterceptor``) and the
:func:`mesh_servicer_method` decorator do for ``grpc.aio`` servers what
``mesh.server_middleware()`` does for aiohttp. For the duration of the
handler (not of the interceptor — see below):

- the inbound **propagation headers** (``x-request-id``, generated when
  absent; W3C/B3 trace context; baggage; semantics.md §7) are in
  :data:`meshlib.tracing.propagation.INBOUND_HEADERS`, so every outbound mesh
  call the handler makes (across ``create_task``/``gather``) carries them;
- the inbound **deadline** is the current deadline
  (:func:`meshlib.resilience.deadline.current_deadline`). gRPC consumes the
  ``grpc-timeout`` header itself and exposes it as the call's deadline, so it
  is read from ``context.time_remaining()``; ``x-envoy-expected-rq-timeout-ms``
  metadata is honoured when the call has no gRPC deadline;
- **inbound policy** (:class:`InboundPolicy`): a local token-bucket rate limit
  (Envoy's ``local_ratelimit``) and fault injection for testing (delay and/or
  abort with a gRPC status), decided before the handler runs;
- with ``mesh.enable_tracing(...)`` a SERVER span (``rpc.system.name="grpc"``,
  ``rpc.method="pkg.Service/Method"``, ``rpc.response.status_code``) is current,
  so outbound CLIENT spans join the caller's trace; with telemetry sinks
  (metrics, access log) one :class:`~meshlib.tracing.record.InboundRecord` per
  call is reported (``status=200`` and ``grpc_status`` as Istio reports gRPC).

Why the handler is wrapped rather than the interceptor doing the work:
``intercept_service`` returns the method handler *before* it runs, so timing
or context set there would cover nothing. The interceptor wraps the handler's
behaviour with ``grpc.experimental.wrap_server_method_handler`` instead, so the
scopes, span and timer enclose the real execution (including a streaming
response until its last message).

Example::

    from meshlib.grpc.server import InboundPolicy
    from meshlib.resilience.ratelimit import LocalRateLimit

    mesh = meshlib.Mesh.from_files("mesh/")
    server = grpc.aio.server(interceptors=[
        mesh.grpc_server_interceptor(rate_limit=LocalRateLimit(max_tokens=100, tokens_per_fill=100)),
    ])

or, per servicer method (no interceptor needed)::

    class Reviews(reviews_pb2_grpc.ReviewsServicer):
        @mesh_servicer_method(mesh)
        async def Get(self, request, context):
            ...  # outbound mesh calls here inherit the deadline and trace headers

Handlers must be ``async def`` (or async generators): synchronous behaviours
run in a thread pool of the aio server, where these context variables would
not be visible, so they are passed through unwrapped.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import grpc.experimental  # wrap_server_method_handler; not imported by `import grpc`

from meshlib.config.model import FaultPolicy
from meshlib.resilience.deadline import deadline_from_headers, deadline_scope
from meshlib.resilience.fault import decide_fault
from meshlib.resilience.ratelimit import LocalRateLimit, TokenBucket
from meshlib.security.authz import DENIED_BODY
from meshlib.security.authz_inbound import authorize_grpc
from meshlib.tracing.propagation import INBOUND_HEADERS, extract
from meshlib.tracing.record import InboundRecord, deliver_inbound

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from meshlib.mesh import Mesh
    from meshlib.tracing.telemetry import Telemetry

__all__ = ["InboundPolicy", "MeshServerInterceptor", "mesh_servicer_method"]

F = TypeVar("F", bound=Callable[..., Any])

# gRPC status codes whose SERVER span is an error (OpenTelemetry RPC semantic conventions).
_SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_CODES_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


@dataclass(frozen=True, slots=True)
class InboundPolicy:
    """What a server applies to each inbound call before its handler runs.

    - ``rate_limit``: one token bucket shared by every call through this
      interceptor (or decorated method); an empty bucket answers
      ``rate_limited_status`` — ``UNAVAILABLE`` by default, as Envoy maps its
      429 to gRPC; ``RESOURCE_EXHAUSTED`` is what Envoy's
      ``rate_limited_as_resource_exhausted`` gives.
    - ``fault``: Istio's fault semantics (:func:`~meshlib.resilience.fault.decide_fault`):
      the delay and the abort are drawn independently from ``mesh.rng``; a
      percentage of 0 never fires; the abort answers ``abort_grpc_status``
      (or the gRPC mapping of ``abort_http_status``) without running the handler.

    >>> from meshlib.config.model import FaultPolicy
    >>> InboundPolicy(fault=FaultPolicy(abort_grpc_status=14, abort_percent=100)).fault.abort_grpc_status
    14
    """

    rate_limit: LocalRateLimit | None = None
    rate_limited_status: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    fault: FaultPolicy | None = None
    port: int = 0  # the server's port, for AuthorizationPolicy `ports` (grpcio does not tell interceptors)

    @property
    def empty(self) -> bool:
        return self.rate_limit is None and self.fault is None


def _http_to_grpc(status: int) -> grpc.StatusCode:
    # The gRPC spec's HTTP → gRPC mapping (what a client sees for an HTTP abort).
    return {
        400: grpc.StatusCode.INTERNAL,
        401: grpc.StatusCode.UNAUTHENTICATED,
        403: grpc.StatusCode.PERMISSION_DENIED,
        404: grpc.StatusCode.UNIMPLEMENTED,
        429: grpc.StatusCode.UNAVAILABLE,
        502: grpc.StatusCode.UNAVAILABLE,
        503: grpc.StatusCode.UNAVAILABLE,
        504: grpc.StatusCode.UNAVAILABLE,
    }.get(status, grpc.StatusCode.UNKNOWN)


def _metadata_headers(metadata: Sequence[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """Invocation metadata → a lower-case header mapping (text values only).

    Binary (``-bin``) values are left out: the carried headers are written onto
    outbound HTTP requests too, where bytes are not valid header values.
    """
    headers: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            headers[key.lower()] = value
    return headers


def _peer_address(peer: str | None) -> str | None:
    """``ipv4:127.0.0.1:5000`` / ``ipv6:[::1]:5000`` → the address without port."""
    if not peer:
        return None
    _, _, rest = peer.partition(":")
    host = rest.rpartition(":")[0] or rest
    return host.strip("[]") or None


class _Inbound:
    """The shared machinery of the interceptor and the decorator: one per interceptor/decorated method."""

    __slots__ = ("_bucket", "_mesh", "_policy")

    def __init__(self, mesh: Mesh, policy: InboundPolicy) -> None:
        self._mesh = mesh
        self._policy = policy
        self._bucket: TokenBucket | None = policy.rate_limit.new_bucket() if policy.rate_limit is not None else None

    def wrap(self, behavior: Callable[..., Any], method: str, metadata: Sequence[tuple[str, Any]] | None) -> Any:
        """``behavior(request_or_iterator, context)`` wrapped; keeps its kind (coroutine / async generator)."""
        if inspect.isasyncgenfunction(behavior):

            async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                async with _CallScope(self, method, metadata, context) as scope:
                    if await scope.admit():
                        async for message in behavior(request, context):
                            yield message

            return streaming
        if inspect.iscoroutinefunction(behavior):

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                async with _CallScope(self, method, metadata, context) as scope:
                    if await scope.admit():
                        return await behavior(request, context)
                return None  # not reached: a rejected call aborts inside admit()

            return unary
        return behavior  # sync behaviour: runs in the server's thread pool, contextvars would not reach it

    async def apply_policy(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        """Rate limit, then fault; aborts the call (raises) when rejected. Returns Envoy response flags."""
        policy = self._policy
        bucket = self._bucket
        if bucket is not None and not bucket.try_consume(self._mesh.clock()):
            raise _Rejected(policy.rate_limited_status, "local rate limited", "RL")
        flags = "-"
        if policy.fault is not None:
            decision = decide_fault(policy.fault, self._mesh.rng)
            if decision.delay_s is not None:
                flags = "DI"
                await asyncio.sleep(decision.delay_s)
            if decision.abort is not None:
                grpc_status = decision.abort.grpc_status
                code = (
                    _CODES_BY_VALUE.get(grpc_status, grpc.StatusCode.UNKNOWN)
                    if grpc_status is not None
                    else _http_to_grpc(decision.abort.http_status or 500)
                )
                raise _Rejected(code, "fault filter abort", "FI" if flags == "-" else "DI,FI")
        return flags


class _Rejected(Exception):
    """A call refused by inbound policy; turned into ``context.abort`` inside the call scope."""

    def __init__(self, code: grpc.StatusCode, details: str, flags: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.flags = flags


class _CallScope:
    """Context variables, deadline, policy and telemetry around one call's real execution."""

    __slots__ = (
        "_context",
        "_deadline_cm",
        "_flags",
        "_headers",
        "_inbound",
        "_metadata",
        "_method",
        "_otel_token",
        "_rejected",
        "_span",
        "_start_ns",
        "_started",
        "_telemetry",
        "_token",
    )

    def __init__(
        self,
        inbound: _Inbound,
        method: str,
        metadata: Sequence[tuple[str, Any]] | None,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        self._inbound = inbound
        self._method = method
        self._metadata = metadata
        self._context = context
        self._flags = "-"
        self._rejected: _Rejected | None = None
        self._span: Span | None = None
        self._otel_token: object = None

    async def __aenter__(self) -> _CallScope:
        context = self._context
        metadata = self._metadata if self._metadata is not None else context.invocation_metadata()
        headers = self._headers = _metadata_headers(metadata)
        mesh = self._inbound._mesh
        now = mesh.clock()
        remaining = context.time_remaining()
        # grpc-timeout never reaches the metadata (gRPC turns it into the call's deadline);
        # a call without one may still carry Envoy's expected-timeout header.
        deadline = now + remaining if remaining is not None else deadline_from_headers(headers, now)
        # Everything that can fail is done before the context variables are set:
        # __aexit__ (which resets them) does not run when __aenter__ raises.
        carried = extract(headers, headers.keys())
        self._deadline_cm = deadline_scope(deadline)
        self._deadline_cm.__enter__()
        self._token = INBOUND_HEADERS.set(carried)
        telemetry = self._telemetry = mesh._telemetry
        if telemetry is not None:
            self._start_ns = time.time_ns()
            self._started = time.perf_counter()
            if telemetry.tracing is not None:
                self._start_span(telemetry)
        return self

    def _start_span(self, telemetry: Telemetry) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind

        tracing = telemetry.tracing
        assert tracing is not None
        name = self._method.lstrip("/")
        parent = tracing.propagator.extract(self._headers)
        attributes: dict[str, Any] = {"rpc.system.name": "grpc", "rpc.method": name}
        address = _peer_address(self._context.peer())
        if address:
            attributes["client.address"] = address
        span = tracing.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        self._span = span
        self._otel_token = otel_context.attach(trace.set_span_in_context(span, parent))

    async def admit(self) -> bool:
        """Apply inbound policy; ``False`` only after the call was aborted (never, in practice: abort raises)."""
        mesh = self._inbound._mesh
        peer_auth = mesh._peer_auth  # PeerAuthentication STRICT: plaintext calls refused before anything else
        if peer_auth is not None:
            from meshlib.security.peer import grpc_strict_refusal, refusal_text
            from meshlib.security.tls_server import InboundTls

            refusal = grpc_strict_refusal(peer_auth, self._context, self._inbound._policy.port or None)
            if refusal is not None:
                InboundTls.of(mesh).counters[refusal] += 1
                self._rejected = _Rejected(grpc.StatusCode.UNAUTHENTICATED, refusal_text(refusal), "-")
                await self._context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal_text(refusal))  # raises
                return False
        authz = mesh._state.authz  # AuthorizationPolicy first, as Envoy's RBAC filter
        if authz is not None:
            context = self._context
            decision = authorize_grpc(
                authz, mesh._authz_stats, context, method=self._method, headers=self._headers,
                port=self._inbound._policy.port, peer_address=_peer_address(context.peer()),
            )
            if not decision.allowed:
                self._rejected = _Rejected(grpc.StatusCode.PERMISSION_DENIED, DENIED_BODY, "-")
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, DENIED_BODY)  # raises
                return False
        if self._inbound._policy.empty:
            return True
        try:
            self._flags = await self._inbound.apply_policy(self._context)
        except _Rejected as rejected:
            self._rejected = rejected
            self._flags = rejected.flags
            await self._context.abort(rejected.code, rejected.details)  # raises: the handler never runs
            return False
        return True

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        try:
            telemetry = self._telemetry
            if telemetry is not None:
                self._finish(telemetry, exc)
        finally:
            self._deadline_cm.__exit__(None, None, None)
            INBOUND_HEADERS.reset(self._token)

    def _status(self, exc: BaseException | None) -> grpc.StatusCode:
        if self._rejected is not None:
            return self._rejected.code
        if isinstance(exc, asyncio.CancelledError):
            return grpc.StatusCode.CANCELLED
        code = self._context.code()  # set by context.abort / set_code
        if isinstance(code, grpc.StatusCode):
            return code
        if isinstance(code, int):
            return _CODES_BY_VALUE.get(code, grpc.StatusCode.UNKNOWN)
        return grpc.StatusCode.OK if exc is None else grpc.StatusCode.UNKNOWN

    def _finish(self, telemetry: Telemetry, exc: BaseException | None) -> None:
        code = self._status(exc)
        span = self._span
        if span is not None:
            from opentelemetry import context as otel_context

            otel_context.detach(self._otel_token)  # type: ignore[arg-type]
            # Ended after the response goes out (meshlib.tracing.deferred), with this end time.
            telemetry.deferred.defer(_finish_server_span, span, time.time_ns(), code, self._flags)
        if telemetry.sinks:
            headers = self._headers
            carried = dict(INBOUND_HEADERS.get())
            record = InboundRecord(
                start_time_unix_ns=self._start_ns,
                duration_s=time.perf_counter() - self._started,
                method="POST",  # every gRPC call is an HTTP/2 POST
                scheme="http",
                authority=headers.get(":authority", ""),
                path=self._method,
                status=200,  # gRPC answers 200 with the outcome in grpc-status, and Istio reports it so
                response_flags=self._flags,
                route=self._method,
                request_id=carried.get("x-request-id"),
                user_agent=headers.get("user-agent"),
                source_address=_peer_address(self._context.peer()),
                grpc_status=code.value[0],
            )
            telemetry.deferred.defer(deliver_inbound, telemetry.sinks, record)


def _finish_server_span(span: Span, end_ns: int, code: grpc.StatusCode, flags: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    attributes: dict[str, Any] = {"rpc.response.status_code": code.name}
    if flags != "-":
        attributes["meshlib.response_flags"] = flags
    if code in _SERVER_ERROR_CODES:
        span.set_status(Status(StatusCode.ERROR))
        attributes["error.type"] = code.name
    span.set_attributes(attributes)
    span.end(end_ns)


class MeshServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """A ``grpc.aio`` server interceptor: inbound context, policy and telemetry for every method.

    Build it with ``mesh.grpc_server_interceptor(**policy)`` (keywords of
    :class:`InboundPolicy`) and pass it to ``grpc.aio.server(interceptors=[...])``::

        server = grpc.aio.server(interceptors=[mesh.grpc_server_interceptor()])

    One rate-limit bucket is shared by all methods of the server.
    """

    def __init__(self, mesh: Mesh, policy: InboundPolicy | None = None) -> None:
        self._inbound = _Inbound(mesh, policy or InboundPolicy())

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: gRPC answers UNIMPLEMENTED itself
        method: str = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        inbound = self._inbound
        return grpc.experimental.wrap_server_method_handler(
            lambda behavior: inbound.wrap(behavior, method, metadata), handler
        )


def mesh_servicer_method(
    mesh: Mesh, *, method: str | None = None, policy: InboundPolicy | None = None
) -> Callable[[F], F]:
    """Decorate an ``async def`` servicer method (or async generator) with the interceptor's behaviour.

    For servers where adding an interceptor is not an option. ``method`` names
    the RPC in spans and records (``"/pkg.Service/Method"``); the default is the
    function's qualified name (``"/ReviewsServicer/Get"``). The decorated
    function may be a method ``(self, request, context)`` or a function
    ``(request, context)``: the context is always the last argument. Use either
    this or the interceptor for a method, not both (each would report the call).

    >>> import meshlib
    >>> mesh = meshlib.Mesh.from_files()
    >>> class Reviews:
    ...     @mesh_servicer_method(mesh, method="/test.Reviews/Get")
    ...     async def Get(self, request, context):
    ...         return request
    >>> Reviews.Get.__name__
    'Get'
    """

    def decorate(function: F) -> F:
        inbound = _Inbound(mesh, policy or InboundPolicy())
        name = method or "/" + function.__qualname__.replace(".", "/")

        if inspect.isasyncgenfunction(function):

            @functools.wraps(function)
            async def streaming(*args: Any) -> AsyncIterator[Any]:
                async with _CallScope(inbound, name, None, args[-1]) as scope:
                    if await scope.admit():
                        async for message in function(*args):
                            yield message

            return streaming  # type: ignore[return-value]

        @functools.wraps(function)
        async def unary(*args: Any) -> Any:
            async with _CallScope(inbound, name, None, args[-1]) as scope:
                if await scope.admit():
                    return await function(*args)
            return None

        return unary  # type: ignore[return-value]

    return decorate
