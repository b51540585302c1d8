"""A minimal ADS test client on the xds-protos stubs: send requests, await responses with a bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2  # type: ignore[import-untyped]

WAIT = 5.0


def node(node_id: str = "node-1", agent: str = "gRPC C-core") -> dict[str, Any]:
    return {"id": node_id, "cluster": "test", "user_agent_name": agent, "user_agent_version": "1.85.1"}


class _Stream:
    call: Any

    def __init__(self, channel: grpc.aio.Channel, node_id: str) -> None:
        self.node: dict[str, Any] | None = node(node_id)
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)

    async def _requests(self) -> AsyncIterator[Any]:
        while (request := await self._queue.get()) is not None:
            yield request

    async def recv(self) -> Any:
        async with asyncio.timeout(WAIT):
            response = await self.call.read()
        assert response is not grpc.aio.EOF, "stream ended"
        return response

    def close(self) -> None:
        self._queue.put_nowait(None)
        self.call.cancel()


class SotwStream(_Stream):
    def __init__(self, channel: grpc.aio.Channel, node_id: str = "node-1") -> None:
        super().__init__(channel, node_id)
        self.call = self.stub.StreamAggregatedResources(self._requests())

    def request(
        self, type_url: str, names: Iterable[str] = (), *, version: str = "", nonce: str = "", error: str | None = None
    ) -> None:
        req = discovery_pb2.DiscoveryRequest(
            node=self.node or None,
            type_url=type_url,
            resource_names=list(names),
            version_info=version,
            response_nonce=nonce,
        )
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._queue.put_nowait(req)

    def ack(self, response: Any, names: Iterable[str] = ()) -> None:
        self.request(response.type_url, names, version=response.version_info, nonce=response.nonce)

    def nack(self, response: Any, error: str, names: Iterable[str] = (), *, acked_version: str = "") -> None:
        self.request(response.type_url, names, version=acked_version, nonce=response.nonce, error=error)

    async def fetch(self, type_url: str, names: Iterable[str] = ()) -> Any:
        """Subscribe, await the answer, ACK it."""
        names = list(names)
        self.request(type_url, names)
        response = await self.recv()
        assert response.type_url == type_url
        self.ack(response, names)
        return response


class DeltaStream(_Stream):
    def __init__(self, channel: grpc.aio.Channel, node_id: str = "node-1") -> None:
        super().__init__(channel, node_id)
        self.call = self.stub.DeltaAggregatedResources(self._requests())

    def request(
        self,
        type_url: str,
        subscribe: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        *,
        initial: Mapping[str, str] | None = None,
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(
            node=self.node,
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            initial_resource_versions=dict(initial or {}),
            response_nonce=nonce,
        )
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._queue.put_nowait(req)

    def ack(self, response: Any) -> None:
        self.request(response.type_url, nonce=response.nonce)
