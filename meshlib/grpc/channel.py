"""Mesh-managed gRPC channels: every call of a ``grpc.aio`` stub goes through the meshlib pipeline.

::

    mesh = meshlib.Mesh.from_files("mesh/")
    async with mesh, mesh.grpc_channel("reviews.default.svc.cluster.local:50051") as channel:
        stub = reviews_pb2_grpc.ReviewsStub(channel)      # any generated stub
        reply = await stub.Get(request, metadata=(("end-user", "jason"),), timeout=2.0)

Per call: a :class:`~meshlib.request.RequestView` (method ``POST``, path
``/pkg.Service/Method``, authority = the target, headers = the call
metadata) is :func:`~meshlib.decision.decide`-d like an HTTP request, then

- PASSTHROUGH (not a mesh host) → a plain ``grpc.aio`` channel to the target;
- LOCAL_REPLY (no route, …) → :class:`grpc.aio.AioRpcError`, no server is hit;
- ROUTE → :class:`~meshlib.resilience.attempts.UpstreamRunner` (deadline,
  faults, rate limit, circuit breaking, timeouts, retries, outlier detection,
  balancing) whose ``send`` dials the picked endpoint on its own channel
  (:class:`~meshlib.grpc.endpoints.EndpointPool`). grpcio offers no custom
  resolver or LB policy in Python, so picking in Python over one channel per
  endpoint is what makes least-request, peak-EWMA and every other meshlib
  policy possible for gRPC.

Retries send ``grpc-previous-rpc-attempts``. Deadlines are set per call (the
service-config ``timeout`` of grpcio is broken), from the runner's hint:
``min(per-try, route timeout, the inbound deadline's remainder)``, so grpcio
puts it on the wire as ``grpc-timeout``. A call's own ``timeout=`` opens a
:func:`~meshlib.resilience.deadline.deadline_scope`.

Inbound propagation headers (``x-request-id``, trace context…) are copied onto
the call's metadata as the HTTP client does; with telemetry on, each call gets
a CLIENT span and an outbound record with its ``grpc_status`` (local replies
carry their flag, e.g. ``FI``, in the ``x-meshlib-local-reply`` trailer).

Streams: the pipeline runs up to the first response message; once one has
arrived the stream is committed and never retried. Request iterators are not
replayable: after grpcio started consuming one, the call is not retried.

Differences from a plain ``grpc.aio`` channel, by design or not yet done:
unary calls start when awaited (not when created); streaming calls take a
request iterator (the ``write()``/``done_writing()`` style is not offered);
authority rewrites and mirrors of a route are not applied to gRPC calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Generator, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from meshlib.aiohttp.local_reply import LOCAL_REPLY_HEADER
from meshlib.config.model import Endpoint
from meshlib.decision import Action, Decision, decide
from meshlib.errors import MeshError
from meshlib.grpc.endpoints import ChannelOptions, EndpointPool, Lease
from meshlib.mesh_state import MeshState
from meshlib.request import RequestView
from meshlib.resilience.attempts import LocalReply, UpstreamRunner
from meshlib.resilience.deadline import deadline_scope
from meshlib.resilience.outcome import GRPC_TO_HTTP, Outcome, OutcomeKind
from meshlib.routing import apply_header_ops
from meshlib.tracing.observation import Observation
from meshlib.tracing.propagation import INBOUND_HEADERS, inject
from meshlib.tracing.record import deliver_outbound

if TYPE_CHECKING:
    from meshlib.mesh import Mesh
    from meshlib.security.tls_client import GrpcTls
    from meshlib.tracing.client_spans import ClientSpan
    from meshlib.tracing.telemetry import Telemetry

__all__ = ["MeshChannel", "http_to_grpc_status"]

PREVIOUS_ATTEMPTS = "grpc-previous-rpc-attempts"
Metadata = tuple[tuple[str, "str | bytes"], ...]
ATTEMPT_COUNT = "x-envoy-attempt-count"
_COUNTS = [str(n) for n in range(11)]
_CODES = {code.value[0]: code for code in grpc.StatusCode}
# One Outcome per grpc status: classification allocates nothing on the hot path.
_OUTCOMES = {value: Outcome(OutcomeKind.RESPONSE, 200, value) for value in _CODES}
_CONNECT_FAILURE = Outcome(OutcomeKind.CONNECT_FAILURE)
_RESET = Outcome(OutcomeKind.RESET)
_CONNECT_FAILURE_DETAILS = ("failed to connect", "connection refused", "dns resolution failed", "no route to host")
_RESET_DETAILS = ("socket closed", "connection reset", "broken pipe", "goaway")
# The peer is not speaking HTTP/2 (grpc-core's "Failed parsing HTTP/2 …"): Envoy's UPE, retried as a reset.
_PROTOCOL_ERROR_DETAILS = ("failed parsing http/2",)
_PROTOCOL_ERROR = Outcome(OutcomeKind.PROTOCOL_ERROR)


def http_to_grpc_status(status: int) -> grpc.StatusCode:
    """The gRPC status for a local reply's HTTP status (Envoy's mapping; 504 → DEADLINE_EXCEEDED).

    >>> http_to_grpc_status(404).name
    'UNIMPLEMENTED'
    """
    if status == 504:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return _HTTP_TO_GRPC.get(status, grpc.StatusCode.UNKNOWN)


_HTTP_TO_GRPC = {
    400: grpc.StatusCode.INTERNAL,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    429: grpc.StatusCode.UNAVAILABLE,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
}


def _local_error(status: grpc.StatusCode, details: str, flag: str) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata((LOCAL_REPLY_HEADER, flag)) if flag else grpc.aio.Metadata()
    return grpc.aio.AioRpcError(status, grpc.aio.Metadata(), trailing, details)


def _reply_error(reply: LocalReply) -> grpc.aio.AioRpcError:
    if reply.grpc_status is not None:
        code = _CODES.get(reply.grpc_status, grpc.StatusCode.UNKNOWN)
    else:
        code = http_to_grpc_status(reply.status)
    return _local_error(code, f"meshlib: {reply.body}", reply.flag)


class _ConnectFailure(Exception):
    """The attempt never reached a server (classified CONNECT_FAILURE / RESET for retries and outliers)."""

    def __init__(self, outcome: Outcome, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.details())
        self.outcome = outcome
        self.error = error


class _Result:
    """What one attempt's ``send`` returns: a response (or first stream message) or the call's error."""

    __slots__ = ("call", "error", "lease", "response")

    def __init__(
        self, response: Any = None, error: grpc.aio.AioRpcError | None = None, call: Any = None,
        lease: Lease | None = None,
    ) -> None:
        self.response = response
        self.error = error
        self.call = call  # streams: the committed call, still open
        self.lease = lease  # streams: held until the stream ends


def _classify(result: _Result) -> Outcome:
    error = result.error
    if error is None:
        return _OUTCOMES[0]
    # An error status is a *response* (the server answered): grpc-status drives retryOn
    # (unavailable, resource-exhausted, …) and outlier detection (via GRPC_TO_HTTP).
    return _OUTCOMES.get(error.code().value[0]) or Outcome(OutcomeKind.RESPONSE, 200, 2)


def _classify_error(exc: BaseException) -> Outcome | None:
    if isinstance(exc, _ConnectFailure):
        return exc.outcome
    return None


def _failed(error: grpc.aio.AioRpcError, timeout: float | None) -> _Result:
    """Turn a failed attempt into a result, or raise what the runner classifies as a local error."""
    code = error.code()
    if code is grpc.StatusCode.UNAVAILABLE:
        details = (error.details() or "").lower()
        if any(marker in details for marker in _PROTOCOL_ERROR_DETAILS):
            raise _ConnectFailure(_PROTOCOL_ERROR, error)
        if any(marker in details for marker in _CONNECT_FAILURE_DETAILS):
            raise _ConnectFailure(_CONNECT_FAILURE, error)
        if any(marker in details for marker in _RESET_DETAILS):
            raise _ConnectFailure(_RESET, error)
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED and timeout is not None:
        # Our own per-call timeout fired (the runner's hint): a timeout, not a server answer.
        raise TimeoutError(error.details())
    return _Result(error=error)


class MeshChannel:
    """A ``grpc.aio.Channel`` look-alike whose calls are routed, balanced and retried by a :class:`Mesh`.

    Get one from :meth:`meshlib.Mesh.grpc_channel`; pass it to generated stubs.

    >>> import meshlib
    >>> channel = meshlib.Mesh.from_files().grpc_channel("reviews.default.svc.cluster.local:9080")
    >>> channel.target
    'reviews.default.svc.cluster.local:9080'
    """

    def __init__(
        self,
        mesh: Mesh,
        target: str,
        *,
        options: ChannelOptions | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._mesh = mesh
        self.target = target.removeprefix("dns:///")
        host, sep, port = self.target.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"gRPC target {target!r} needs a port: host:port")
        self.host = host.strip("[]")
        self.port = int(port)
        self._options = tuple(options or ())
        self._credentials = credentials
        self._pool = EndpointPool(authority=self.target, options=self._options, credentials=credentials)
        self._direct: grpc.aio.Channel | None = None
        self._seen_state: MeshState | None = None
        self._runner: UpstreamRunner[_Result] = UpstreamRunner(
            stats=mesh.host_stats,
            rng=mesh.rng,
            clock=mesh.clock,
            classify=_classify,
            classify_error=_classify_error,
            discard=self._discard,
            owner=mesh,
            transport="grpc",
        )

    # ------------------------------------------------------------------ grpc.aio.Channel surface

    def unary_unary(
        self, method: str, request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None, _registered_method: bool | None = False,
    ) -> UnaryUnaryMultiCallable:
        return UnaryUnaryMultiCallable(
            self, method, request_serializer, response_deserializer, bool(_registered_method)
        )

    def unary_stream(
        self, method: str, request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None, _registered_method: bool | None = False,
    ) -> StreamMultiCallable:
        return StreamMultiCallable(
            self, "unary_stream", method, serializer=request_serializer, deserializer=response_deserializer,
            registered=bool(_registered_method),
        )

    def stream_unary(
        self, method: str, request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None, _registered_method: bool | None = False,
    ) -> StreamUnaryMultiCallable:
        return StreamUnaryMultiCallable(
            self, method, request_serializer, response_deserializer, bool(_registered_method)
        )

    def stream_stream(
        self, method: str, request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None, _registered_method: bool | None = False,
    ) -> StreamMultiCallable:
        return StreamMultiCallable(
            self, "stream_stream", method, serializer=request_serializer, deserializer=response_deserializer,
            registered=bool(_registered_method),
        )

    async def channel_ready(self) -> None:
        """Channels to endpoints connect on their first call; there is nothing to wait for."""

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return grpc.ChannelConnectivity.READY if len(self._pool) else grpc.ChannelConnectivity.IDLE

    async def close(self, grace: float | None = None) -> None:
        """Close every per-endpoint channel (and the passthrough one)."""
        await self._pool.close(grace)
        if self._direct is not None:
            direct, self._direct = self._direct, None
            await direct.close(grace)

    async def __aenter__(self) -> MeshChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def endpoint_channels(self) -> list[str]:
        """``ip:port`` of the endpoints this channel holds an open per-endpoint channel to."""
        return self._pool.keys()

    # ------------------------------------------------------------------ the pipeline

    def _direct_channel(self) -> grpc.aio.Channel:
        if self._direct is None:
            if self._credentials is None:
                self._direct = grpc.aio.insecure_channel(self.target, options=self._options)
            else:
                self._direct = grpc.aio.secure_channel(self.target, self._credentials, options=self._options)
        return self._direct

    def _state(self) -> MeshState:
        state = self._mesh._state  # one read: this call sees one configuration
        if state is not self._seen_state:
            # The configuration changed: retire channels of endpoints that left every cluster.
            self._seen_state = state
            if len(self._pool):
                live = {ep.key for cluster in state.snapshot.clusters.values() for ep in cluster.endpoints}
                self._pool.sweep(live)
        return state

    def _discard(self, result: _Result) -> None:
        # A retry replaces this attempt: a still-open stream is cancelled and its lease freed.
        if result.call is not None:
            result.call.cancel()
        if result.lease is not None:
            self._pool.release(result.lease)
            result.lease = None

    def _route(self, path: str, metadata: Any) -> tuple[MeshState, Decision, RequestView, Metadata]:
        state = self._state()
        outbound: Metadata = tuple(metadata) if metadata else ()
        headers = {"content-type": "application/grpc"}
        for key, value in outbound:
            if isinstance(value, str):  # -bin metadata is bytes: not matchable
                headers[key] = value
        carried = INBOUND_HEADERS.get()
        if carried:  # called while handling an inbound request: carry its trace headers on
            before = len(headers)
            telemetry = self._mesh._telemetry
            inject(headers, carried, skip_trace=telemetry is not None and telemetry.tracing is not None)
            if len(headers) != before:
                present = {k for k, _ in outbound}
                # Only what inject added: with tracing on, OpenTelemetry writes the trace context.
                outbound = outbound + tuple(
                    (k, v) for k, v in carried if k not in present and headers.get(k) == v
                )
        view = RequestView("POST", self.target, path, "http", headers)
        return state, decide(state, view, self.port, self._mesh.rng), view, outbound

    def _run(
        self, path: str, metadata: Any, kind: str, attempt_fn: Callable[[Lease, str, Metadata, float | None], Any],
        body_replayable: Callable[[], bool] | None,
    ) -> Awaitable[Any]:
        """Route one call; ``attempt_fn(lease, path, metadata, timeout)`` makes one attempt → _Result.

        Returns the committed _Result, or None: pass the call through to the target unchanged.
        Raises the call's :class:`grpc.aio.AioRpcError` (a server's or a local reply's).
        """
        # A plain def handing back the coroutine: one coroutine frame less per call on the hot path.
        telemetry = self._mesh._telemetry
        if telemetry is not None:
            tracing = telemetry.tracing
            if tracing is None or telemetry.sinks:
                return self._observed(telemetry, path, metadata, attempt_fn, body_replayable)
            trace_headers: dict[str, str] = {}
            span = tracing.begin_client_or_propagate(
                "POST", f"http://{self.target}{path}", trace_headers, self.host, self.port
            )
            if span is not None:
                return self._observed(telemetry, path, metadata, attempt_fn, body_replayable, span, trace_headers)
            # Sampled out and no sink: the span's context travels, nothing is observed or finished.
            return self._routed(
                path, metadata, attempt_fn, body_replayable, observation=None, extra=tuple(trace_headers.items())
            )
        return self._routed(path, metadata, attempt_fn, body_replayable, observation=None, extra=())

    async def _observed(  # noqa: PLR0917 - _run's arguments, plus a span begun there
        self, telemetry: Telemetry, path: str, metadata: Any,
        attempt_fn: Callable[[Lease, str, Metadata, float | None], Any], body_replayable: Callable[[], bool] | None,
        begun: ClientSpan | None = None, begun_headers: dict[str, str] | None = None,
    ) -> Any:
        """``_routed`` with a CLIENT span and a record for the telemetry sinks (until the first message)."""
        tracing = telemetry.tracing
        observation = Observation()
        start_ns = time.time_ns() if begun is None else begun.start_ns
        started = time.perf_counter()
        trace_headers: dict[str, str] = {} if begun_headers is None else begun_headers
        if begun is not None:  # begun (and its context written) by _run
            observation.span = begun
        elif tracing is not None:
            span = observation.span = tracing.begin_client(
                "POST", f"http://{self.target}{path}", start_ns, self.host, self.port
            )
            tracing.inject(span, trace_headers)
        status, grpc_status, flags = 200, 0, "-"
        try:
            result = await self._routed(
                path, metadata, attempt_fn, body_replayable, observation=observation,
                extra=tuple(trace_headers.items()),
            )
            if result is None:
                observation.cluster = "PassthroughCluster"
            return result
        except grpc.aio.AioRpcError as error:
            grpc_status = error.code().value[0]
            local = dict(error.trailing_metadata() or ()).get(LOCAL_REPLY_HEADER)
            if local:  # a local reply: report the HTTP status Envoy would have answered with
                flags = str(local)
                status = GRPC_TO_HTTP.get(grpc_status, 500)
            raise
        except BaseException:
            status, grpc_status = 0, 2
            raise
        finally:
            duration_s = observation.duration_s = time.perf_counter() - started
            observation.end_ns = start_ns + int(duration_s * 1e9)
            if observation.attempts > 1 and grpc_status != 0:
                flags = "URX" if flags == "-" else f"{flags},URX"  # the retries ran out on a failure
            observation.status, observation.flags = status, flags
            deferred = telemetry.deferred
            client_span = observation.span
            if tracing is not None and client_span is not None and client_span.recording:
                # Finished after the reply, with these times: the caller gets its reply first.
                deferred.defer(tracing.finish_client, client_span, observation)
            if telemetry.sinks:
                headers = {k: v for k, v in (tuple(metadata) if metadata else ()) if isinstance(v, str)}
                record = observation.outbound_record(
                    start_time_unix_ns=start_ns,
                    duration_s=observation.duration_s,
                    method="POST",
                    scheme="http",
                    authority=self.target,
                    path=path,
                    status=status,
                    flags=flags,
                    request_id=headers.get("x-request-id") or dict(INBOUND_HEADERS.get()).get("x-request-id"),
                    user_agent=headers.get("user-agent"),
                    grpc_status=grpc_status,
                )
                deferred.defer(deliver_outbound, telemetry.sinks, record)

    async def _routed(
        self, path: str, metadata: Any, attempt_fn: Callable[[Lease, str, Metadata, float | None], Any],
        body_replayable: Callable[[], bool] | None, *, observation: Observation | None, extra: Metadata,
    ) -> Any:
        state, decision, view, outbound = self._route(path, metadata)
        if extra:
            outbound = outbound + extra
        if observation is not None:
            observation.describe(decision, view.authority)
        action = decision.action
        if action is Action.PASSTHROUGH:
            return None
        if action is Action.LOCAL_REPLY:
            raise _local_error(
                http_to_grpc_status(decision.status), decision.body.decode(errors="replace").strip(), decision.flag
            )
        route = decision.route
        cluster = decision.cluster
        destination = decision.destination
        balancer = decision.balancer
        assert route is not None and cluster is not None and destination is not None and balancer is not None
        if not cluster.endpoints and cluster.resolution == "NONE":
            if cluster.policy.tls.mode != "DISABLE":  # the direct channel cannot take per-cluster TLS: never plaintext
                raise _local_error(
                    grpc.StatusCode.UNAVAILABLE,
                    "meshlib: upstream connect error: DestinationRule tls on a passthrough (resolution NONE) "
                    "cluster is not supported on gRPC mesh channels",
                    "UF",
                )
            return None  # passthrough cluster: dial the original destination
        if not (route.headers.request.empty and destination.headers.request.empty):
            ops_headers = {k: v for k, v in outbound if isinstance(v, str)}
            apply_header_ops(route.headers.request, ops_headers)
            apply_header_ops(destination.headers.request, ops_headers)
            binary = tuple((k, v) for k, v in outbound if not isinstance(v, str))
            outbound = tuple(ops_headers.items()) + binary
        if decision.path is not None:
            path = decision.path
        pool = self._pool
        tls: GrpcTls | None = None
        tls_reasons: list[str | None] | None = None  # TLS failures' reasons, for the local reply (TLS only)
        if cluster.policy.tls.mode != "DISABLE":  # DestinationRule tls: a TLS channel, never plaintext
            tls_reasons = []
            try:
                tls = self._mesh.upstream_tls().for_grpc_cluster(cluster)
            except MeshError as exc:  # TlsUnavailable: no certificate, a setting grpcio cannot honour
                raise _local_error(
                    grpc.StatusCode.UNAVAILABLE, f"meshlib: upstream connect error: {exc}", "UF"
                ) from None

        async def send(endpoint: Endpoint, attempt: int, timeout_hint_s: float | None) -> _Result:
            # On retries only (per-call metadata costs grpcio time on every call): the gRPC retry
            # spec's grpc-previous-rpc-attempts (grpc servers parse it and do not show it in
            # invocation_metadata) and Envoy's x-envoy-attempt-count, which applications can read.
            if attempt == 1:
                metadata = outbound
            else:
                previous = _COUNTS[attempt - 1] if attempt < 11 else str(attempt - 1)
                count = _COUNTS[attempt] if attempt < 10 else str(attempt)
                metadata = (*outbound, (ATTEMPT_COUNT, count), (PREVIOUS_ATTEMPTS, previous))
            lease = pool.acquire(endpoint, tls)
            result: _Result | None = None
            try:
                result = await attempt_fn(lease, path, metadata, timeout_hint_s)
                return result
            except _ConnectFailure as failure:
                if tls_reasons is not None:  # a TLS failure: counted, and its reason kept for the local reply
                    from meshlib.security.grpc_failures import count_grpc_tls_failure

                    counters = self._mesh._runtimes.runtimes[cluster.name].counters
                    tls_reasons.append(count_grpc_tls_failure(failure.error.details() or "", counters))
                raise
            finally:
                if result is None or result.lease is None:
                    pool.release(lease)  # streams keep theirs until the stream ends

        result = await self._runner.run(
            decision,
            self._mesh._runtimes.runtimes[cluster.name],
            send,
            idempotent=True,  # gRPC retries are decided by retryOn conditions, not the (always POST) method
            body_replayable=body_replayable,
            hash_key=balancer.request_hash(view) if cluster.policy.lb.hash_policies else None,
            route_bucket=state.route_buckets.get(id(route)) if state.route_buckets else None,
            report=observation,
        )
        if isinstance(result, LocalReply):
            if tls_reasons and tls_reasons[-1] is not None and result.flag == "UF":
                result = replace(result, body=f"{result.body}, transport failure reason: {tls_reasons[-1]}")
            raise _reply_error(result)
        if result.error is not None:
            raise result.error
        return result


class _MultiCallableBase:
    __slots__ = ("_channel", "_deserializer", "_method", "_registered", "_serializer")

    def __init__(
        self, channel: MeshChannel, method: str, serializer: Callable[[Any], bytes] | None,
        deserializer: Callable[[bytes], Any] | None, registered: bool,
    ) -> None:
        self._channel = channel
        self._method = method
        self._serializer = serializer
        self._deserializer = deserializer
        self._registered = registered

    def _direct(self, kind: str, path: str) -> Any:
        factory = getattr(self._channel._direct_channel(), kind)
        return factory(
            path, request_serializer=self._serializer, response_deserializer=self._deserializer,
            _registered_method=self._registered,
        )


class UnaryUnaryMultiCallable(_MultiCallableBase):
    """``stub.Method(request, timeout=, metadata=, ...)`` → an awaitable :class:`UnaryUnaryCall`."""

    __slots__ = ()

    def __call__(
        self, request: Any, *, timeout: float | None = None, metadata: Any = None, credentials: Any = None,
        wait_for_ready: bool | None = None, compression: Any = None,
    ) -> UnaryUnaryCall:
        invoke = self._invoke if timeout is not None else self._pipeline  # no deadline scope to open
        return UnaryUnaryCall(invoke(
            request, timeout_s=timeout, metadata=metadata, credentials=credentials,
            wait_for_ready=wait_for_ready, compression=compression,
        ))

    async def _invoke(
        self, request: Any, *, timeout_s: float | None, metadata: Any, credentials: Any,
        wait_for_ready: bool | None, compression: Any,
    ) -> Any:
        if timeout_s is not None:
            with deadline_scope(self._channel._mesh.clock() + timeout_s):
                return await self._pipeline(
                    request, timeout_s=timeout_s, metadata=metadata, credentials=credentials,
                    wait_for_ready=wait_for_ready, compression=compression,
                )
        return await self._pipeline(
            request, timeout_s=None, metadata=metadata, credentials=credentials, wait_for_ready=wait_for_ready,
            compression=compression,
        )

    async def _pipeline(
        self, request: Any, *, timeout_s: float | None, metadata: Any, credentials: Any,
        wait_for_ready: bool | None, compression: Any,
    ) -> Any:
        serializer, deserializer, registered = self._serializer, self._deserializer, self._registered

        async def attempt(lease: Lease, path: str, md: Metadata, hint: float | None) -> _Result:
            callable_ = lease.multicallable("unary_unary", path, serializer, deserializer, registered)
            call = callable_(
                request, timeout=hint, metadata=md, credentials=credentials, wait_for_ready=wait_for_ready,
                compression=compression,
            )
            try:
                return _Result(await call)
            except grpc.aio.AioRpcError as error:
                return _failed(error, hint)
            except asyncio.CancelledError:
                call.cancel()  # per-try / route timeout: stop the server's work too
                raise

        result = await self._channel._run(self._method, metadata, "unary_unary", attempt, None)
        if result is None:
            return await self._direct("unary_unary", self._method)(
                request, timeout=timeout_s, metadata=metadata, credentials=credentials, wait_for_ready=wait_for_ready,
                compression=compression,
            )
        return result.response


class UnaryUnaryCall:
    """An awaitable unary call. Like ``grpc.aio.UnaryUnaryCall`` it offers ``code()``, ``details()``…;
    unlike it, the call starts when first awaited (or when one of those is asked)."""

    __slots__ = ("_coro", "_error", "_response", "_task")

    def __init__(self, coro: Any) -> None:
        self._coro = coro
        self._task: asyncio.Task[Any] | None = None
        self._response: Any = None
        self._error: BaseException | None = None

    def __await__(self) -> Generator[Any, None, Any]:
        if self._task is None:
            # Run inline in the caller's task: no extra task per call (it costs a tenth of a call).
            self._task = asyncio.get_running_loop().create_future()  # type: ignore[assignment]
            try:
                response = yield from self._coro.__await__()
            except asyncio.CancelledError:
                self._task.cancel()  # type: ignore[union-attr]
                raise
            except BaseException as exc:
                self._error = exc
                self._task.set_exception(exc)  # type: ignore[union-attr]
                self._task.exception()  # type: ignore[union-attr]  # mark retrieved
                raise
            self._response = response
            self._task.set_result(response)  # type: ignore[union-attr]
            return response
        return (yield from self._task.__await__())

    def _start(self) -> asyncio.Future[Any]:
        if self._task is None:
            self._task = asyncio.ensure_future(self._coro)
        return self._task

    async def _settle(self) -> BaseException | None:
        try:
            await asyncio.shield(self._start())
        except BaseException as exc:  # handed to the caller to inspect
            return exc
        return None

    async def code(self) -> grpc.StatusCode:
        error = await self._settle()
        if isinstance(error, grpc.aio.AioRpcError):
            return error.code()
        return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN

    async def details(self) -> str | None:
        error = await self._settle()
        return error.details() if isinstance(error, grpc.aio.AioRpcError) else None

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        error = await self._settle()
        return error.trailing_metadata() if isinstance(error, grpc.aio.AioRpcError) else grpc.aio.Metadata()

    async def initial_metadata(self) -> grpc.aio.Metadata:
        error = await self._settle()
        return error.initial_metadata() if isinstance(error, grpc.aio.AioRpcError) else grpc.aio.Metadata()

    def done(self) -> bool:
        return self._task is not None and self._task.done()

    def cancel(self) -> bool:
        return self._task.cancel() if self._task is not None and isinstance(self._task, asyncio.Task) else False


class _ReplayGuard:
    """Wraps a request iterator and notes when grpcio starts consuming it (no retry after that)."""

    __slots__ = ("source", "started")

    def __init__(self, source: Iterable[Any] | AsyncIterable[Any]) -> None:
        self.source = source
        self.started = False

    def replayable(self) -> bool:
        return not self.started

    async def iterate(self) -> AsyncIterator[Any]:
        self.started = True  # an async generator's body runs on the first pull
        source = self.source
        if isinstance(source, AsyncIterable):
            async for item in source:
                yield item
        else:
            for item in source:
                yield item


class StreamUnaryMultiCallable(_MultiCallableBase):
    """``stub.Method(request_iterator, ...)`` → awaitable; retried only while the iterator is untouched."""

    __slots__ = ()

    def __call__(
        self, request_iterator: Iterable[Any] | AsyncIterable[Any], *, timeout: float | None = None,
        metadata: Any = None, credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None,
    ) -> UnaryUnaryCall:
        return UnaryUnaryCall(self._invoke(
            request_iterator, timeout_s=timeout, metadata=metadata, credentials=credentials,
            wait_for_ready=wait_for_ready, compression=compression,
        ))

    async def _invoke(
        self, requests: Iterable[Any] | AsyncIterable[Any], *, timeout_s: float | None, metadata: Any,
        credentials: Any, wait_for_ready: bool | None, compression: Any,
    ) -> Any:
        with deadline_scope(self._channel._mesh.clock() + timeout_s if timeout_s is not None else None):
            guard = _ReplayGuard(requests)
            serializer, deserializer, registered = self._serializer, self._deserializer, self._registered

            async def attempt(lease: Lease, path: str, md: Metadata, hint: float | None) -> _Result:
                callable_ = lease.multicallable("stream_unary", path, serializer, deserializer, registered)
                call = callable_(
                    guard.iterate(), timeout=hint, metadata=md, credentials=credentials,
                    wait_for_ready=wait_for_ready, compression=compression,
                )
                try:
                    return _Result(await call)
                except grpc.aio.AioRpcError as error:
                    return _failed(error, hint)
                except asyncio.CancelledError:
                    call.cancel()
                    raise

            result = await self._channel._run(self._method, metadata, "stream_unary", attempt, guard.replayable)
            if result is None:
                return await self._direct("stream_unary", self._method)(
                    guard.iterate(), timeout=timeout_s, metadata=metadata, credentials=credentials,
                    wait_for_ready=wait_for_ready, compression=compression,
                )
            return result.response


class StreamMultiCallable(_MultiCallableBase):
    """unary-stream and stream-stream: the pipeline runs until the first response message."""

    __slots__ = ("_kind",)

    def __init__(
        self, channel: MeshChannel, kind: str, method: str, *, serializer: Callable[[Any], bytes] | None,
        deserializer: Callable[[bytes], Any] | None, registered: bool,
    ) -> None:
        super().__init__(channel, method, serializer, deserializer, registered)
        self._kind = kind

    def __call__(
        self, request: Any = None, *, timeout: float | None = None, metadata: Any = None, credentials: Any = None,
        wait_for_ready: bool | None = None, compression: Any = None,
    ) -> StreamCall:
        if request is None:
            raise TypeError("meshlib gRPC streams need the request (unary-stream) or a request iterator")
        return StreamCall(self, self._start(
            request, timeout_s=timeout, metadata=metadata, credentials=credentials,
            wait_for_ready=wait_for_ready, compression=compression,
        ))

    async def _start(
        self, request: Any, *, timeout_s: float | None, metadata: Any, credentials: Any,
        wait_for_ready: bool | None, compression: Any,
    ) -> tuple[Any, Any, Lease | None]:
        """→ (open grpc call, first message or EOF, lease to release when the stream ends)."""
        kind = self._kind
        streaming_requests = kind == "stream_stream"
        guard = _ReplayGuard(request) if streaming_requests else None
        with deadline_scope(self._channel._mesh.clock() + timeout_s if timeout_s is not None else None):
            serializer, deserializer, registered = self._serializer, self._deserializer, self._registered

            async def attempt(lease: Lease, path: str, md: Metadata, hint: float | None) -> _Result:
                callable_ = lease.multicallable(kind, path, serializer, deserializer, registered)
                call = callable_(
                    guard.iterate() if guard is not None else request, timeout=hint, metadata=md,
                    credentials=credentials, wait_for_ready=wait_for_ready, compression=compression,
                )
                try:
                    first = await call.read()
                except grpc.aio.AioRpcError as error:
                    return _failed(error, hint)
                except asyncio.CancelledError:
                    call.cancel()
                    raise
                if first is grpc.aio.EOF:
                    return _Result(first, call=call)
                # Committed: a message has arrived; the stream keeps its endpoint channel until it ends.
                return _Result(first, call=call, lease=lease)

            result = await self._channel._run(
                self._method, metadata, kind, attempt, guard.replayable if guard is not None else None
            )
            if result is None:
                call = self._direct(kind, self._method)(
                    guard.iterate() if guard is not None else request, timeout=timeout_s, metadata=metadata,
                    credentials=credentials, wait_for_ready=wait_for_ready, compression=compression,
                )
                return call, None, None
            return result.call, result.response, result.lease


class StreamCall:
    """A streaming call: ``async for reply in call`` or ``await call.read()`` (``grpc.aio.EOF`` at the end)."""

    __slots__ = ("_call", "_first", "_lease", "_owner", "_start", "_started")

    def __init__(self, owner: StreamMultiCallable, start: Any) -> None:
        self._owner = owner
        self._start = start
        self._started: asyncio.Task[tuple[Any, Any, Lease | None]] | None = None
        self._call: Any = None
        self._first: Any = None
        self._lease: Lease | None = None

    async def _ready(self) -> Any:
        if self._call is None:
            if self._started is None:
                self._started = asyncio.ensure_future(self._start)
            self._call, self._first, self._lease = await self._started
        return self._call

    def _release(self) -> None:
        if self._lease is not None:
            lease, self._lease = self._lease, None
            self._owner._channel._pool.release(lease)

    async def read(self) -> Any:
        call = await self._ready()
        first = self._first
        if first is not None:
            self._first = None
            if first is grpc.aio.EOF:
                self._release()
            return first
        try:
            message = await call.read()
        except BaseException:
            self._release()
            raise
        if message is grpc.aio.EOF:
            self._release()
        return message

    def __aiter__(self) -> StreamCall:
        return self

    async def __anext__(self) -> Any:
        message = await self.read()
        if message is grpc.aio.EOF:
            raise StopAsyncIteration
        return message

    async def code(self) -> grpc.StatusCode:
        return await (await self._ready()).code()

    async def details(self) -> str:
        return await (await self._ready()).details()  # type: ignore[no-any-return]

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return await (await self._ready()).initial_metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        return await (await self._ready()).trailing_metadata()

    def cancel(self) -> bool:
        self._release()
        if self._call is not None:
            return bool(self._call.cancel())
        if self._started is not None:
            return self._started.cancel()
        return False

    def done(self) -> bool:
        return self._call is not None and bool(self._call.done())
