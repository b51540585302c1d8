"""The ``AggregatedDiscoveryService`` servicer: drives SotW and delta sessions over grpc.aio.

Like go-control-plane's server, this layer only moves messages: each stream
runs one loop that wakes on "a request arrived" or "the group's snapshot
changed", lets its session (:mod:`server_sotw` / :mod:`server_delta`) decide,
and writes the bytes it returns. A reader task forwards requests so a slow
write never delays reading ACKs. The per-stream work on a push is picking the
shared pre-encoded entries and appending a nonce: responses are yielded as
``bytes`` (the handler is registered without a response serializer), so no
proto is serialised per stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from meshlib.controlplane.cache import ResourceSnapshot, SnapshotCache
from meshlib.controlplane.server_delta import DeltaSession
from meshlib.controlplane.server_sotw import ProtocolError, SotwSession
from meshlib.controlplane.status import StatusBoard, StreamStatus

__all__ = ["SERVICE_NAME", "AggregatedDiscoveryService"]

SERVICE_NAME = "envoy.service.discovery.v3.AggregatedDiscoveryService"

log = logging.getLogger(__name__)


class _Session(Protocol):
    group: str | None

    def on_request(self, request: Any) -> None: ...

    def owes_response(self) -> bool: ...

    def responses(self, snapshot: ResourceSnapshot) -> list[bytes]: ...


class AggregatedDiscoveryService:
    """ADS servicer over a :class:`SnapshotCache`; add it to a ``grpc.aio`` server with :meth:`add_to_server`."""

    def __init__(
        self,
        cache: SnapshotCache,
        board: StatusBoard | None = None,
        authorize: Callable[[grpc.aio.ServicerContext, str], str | None] | None = None,
    ) -> None:
        self.cache = cache
        self.board = board if board is not None else StatusBoard()
        # Secure mode: may this stream's peer claim its node id? None = yes, else the reason (→ PERMISSION_DENIED).
        self.authorize = authorize

    def add_to_server(self, server: grpc.aio.Server) -> None:
        handlers = {
            # response_serializer=None: the sessions yield already-encoded responses.
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.StreamAggregatedResources, request_deserializer=discovery_pb2.DiscoveryRequest.FromString
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.DeltaAggregatedResources, request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))

    # grpc.aio recognises streaming handlers by being async generator functions, hence the delegation.
    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        status = StreamStatus("sotw", context.peer())
        async for response in self._run(SotwSession(status, self.cache.group_of), status, request_iterator, context):
            yield response

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        status = StreamStatus("delta", context.peer())
        async for response in self._run(DeltaSession(status, self.cache.group_of), status, request_iterator, context):
            yield response

    async def _run(
        self,
        session: _Session,
        status: StreamStatus,
        request_iterator: AsyncIterator[Any],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[bytes]:
        wake = asyncio.Event()
        closed = False
        refused: ProtocolError | None = None
        unwatch: Callable[[], None] | None = None
        board = self.board

        async def read() -> None:
            # Requests are applied as they arrive. An ACK (the message a push makes every
            # stream send) only updates the status: the sending loop is not woken for it.
            nonlocal closed, refused
            try:
                async for request in request_iterator:
                    if refused is not None:
                        continue
                    try:
                        session.on_request(request)
                    except ProtocolError as exc:
                        refused = exc
                        wake.set()
                        continue
                    if unwatch is None or session.owes_response():
                        wake.set()
                    else:
                        board.changed()
            except Exception as exc:  # the client went away mid-read; the stream loop ends below
                log.debug("ADS stream %s: read ended: %r", status.stream_id, exc)
            finally:
                closed = True
                wake.set()

        reader = asyncio.create_task(read(), name=f"ads-read-{status.stream_id}")
        authorized = self.authorize is None
        board.register(status)
        try:
            while True:
                await wake.wait()
                wake.clear()
                if refused is not None:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(refused))
                if not authorized and session.group is not None and self.authorize is not None:
                    refusal = self.authorize(context, status.node_id)  # before anything is watched or sent
                    if refusal is not None:
                        await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
                    authorized = True
                if session.group is not None and unwatch is None:
                    unwatch = self.cache.watch(session.group, wake.set)
                if closed:
                    return
                snapshot = self.cache.snapshot(session.group) if session.group is not None else None
                if snapshot is not None:
                    responses = session.responses(snapshot)
                    board.changed()
                    for response in responses:
                        yield response
                else:
                    board.changed()
        finally:
            reader.cancel()
            if unwatch is not None:
                unwatch()
            board.unregister(status)
            log.debug("ADS stream %s from %s closed", status.stream_id, status.node_id or status.peer)
