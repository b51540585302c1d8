"""Sync gRPC channels: carry the inbound call's trace headers and deadline (``grpc.intercept_channel``).

The sync ``grpc`` API runs no meshlib routing or balancing (use
``mesh.grpc_channel`` on ``grpc.aio`` for that, or an ``xds:///`` target);
what it can get cheaply is the *context* of the inbound request being handled:

- the propagation headers captured by the server interceptor / aiohttp
  middleware (:data:`~meshlib.tracing.propagation.INBOUND_HEADERS`:
  ``x-request-id``, trace context, baggage, …) are added to the call's
  metadata, unless the caller set them;
- the inbound deadline (:func:`~meshlib.resilience.deadline.current_deadline`)
  bounds the call's ``timeout`` (``min(timeout, time left)``); when it has
  already passed the call fails locally with ``DEADLINE_EXCEEDED`` and nothing
  is sent;
- given a ``mesh`` with tracing on, the trace context written is the current
  OpenTelemetry span's (the SERVER span), so the callee's span is its child.

Context variables reach a sync call made from the handler's thread, and from
``asyncio.to_thread`` / ``loop.run_in_executor(None, contextvars.copy_context().run, ...)``
(``to_thread`` copies the context; a bare executor does not).

Example::

    channel = grpc.intercept_channel(grpc.insecure_channel("ratings:9090"), MeshSyncClientInterceptor(mesh))
    stub = ratings_pb2_grpc.RatingsStub(channel)

    async def Get(self, request, context):           # an aio servicer behind mesh.grpc_server_interceptor()
        return await asyncio.to_thread(stub.Rate, request)   # inherits x-request-id and the deadline
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import grpc

from meshlib.resilience.deadline import DeadlineExceeded, current_deadline, remaining_timeout
from meshlib.tracing.propagation import INBOUND_HEADERS, inject

if TYPE_CHECKING:
    from meshlib.mesh import Mesh

__all__ = ["DeadlineExceededError", "MeshSyncClientInterceptor"]


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _ClientCallDetails(_CallDetails, grpc.ClientCallDetails):  # type: ignore[misc]
    """``grpc.ClientCallDetails`` must be an instance of that class; a namedtuple gives the fields."""


class DeadlineExceededError(DeadlineExceeded, grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """Raised instead of sending a call whose inbound deadline has passed; a ``grpc.RpcError`` like any other."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.DEADLINE_EXCEEDED

    def details(self) -> str:
        return str(self)

    def initial_metadata(self) -> tuple[()]:
        return ()

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False


class MeshSyncClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds the inbound propagation headers and deadline to every call of a sync channel.

    ``mesh`` (optional) supplies the clock deadlines are measured with and,
    with tracing on, the propagator for the current span's context.

    >>> import grpc
    >>> channel = grpc.intercept_channel(grpc.insecure_channel("127.0.0.1:1"), MeshSyncClientInterceptor())
    >>> channel.close()
    """

    def __init__(self, mesh: Mesh | None = None) -> None:
        self._mesh = mesh
        self._clock: Callable[[], float] = mesh.clock if mesh is not None else time.monotonic

    def _details(self, details: Any) -> Any:
        carried = INBOUND_HEADERS.get()
        deadline = current_deadline()
        telemetry = self._mesh._telemetry if self._mesh is not None else None
        tracing = telemetry.tracing if telemetry is not None else None
        if not carried and deadline is None and tracing is None:
            return details  # not inside a mesh-handled request: the call goes out untouched
        metadata = list(details.metadata or ())
        headers: dict[str, str] = {}
        if tracing is not None:
            tracing.injector.inject(headers)  # the current (SERVER) span's context, not the caller's
        inject(headers, carried, skip_trace=tracing is not None)
        present = {key.lower() for key, _ in metadata}
        metadata.extend((name, value) for name, value in headers.items() if name not in present)
        timeout = details.timeout
        if deadline is not None:
            try:
                timeout = remaining_timeout(timeout, deadline, self._clock())
            except DeadlineExceeded as exc:
                raise DeadlineExceededError(exc.deadline, exc.now) from None
        return _ClientCallDetails(
            details.method,
            timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request_iterator: Iterator[Any]
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request_iterator: Iterator[Any]
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)
