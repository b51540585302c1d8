"""One ``grpc.aio`` channel per endpoint (``ip:port``), created lazily, retired gracefully.

grpcio has no Python API for custom resolvers or LB policies, so a mesh-managed
channel picks the endpoint itself and dials it on a channel of its own (option
(3) of the ecosystem notes). The pool owns those channels:

- a channel is created on first use of its endpoint and reused afterwards
  (HTTP/2 multiplexes every call on it);
- when the mesh state changes, endpoints no longer in any cluster are
  *retired*: taken out of the pool at once (new calls cannot pick them) but
  closed only when their last in-flight call has finished, so an endpoint
  change never drops a call mid-flight.

::

    pool = EndpointPool(authority="reviews:50051")
    lease = pool.acquire(endpoint)        # +1 in flight on that endpoint's channel
    try:
        ...  # lease.channel.unary_unary(...)(request)
    finally:
        pool.release(lease)
    pool.sweep(live_keys)                 # retire channels of endpoints that left
    await pool.close()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from meshlib.config.model import Endpoint

if TYPE_CHECKING:
    from meshlib.security.tls_client import GrpcTls

ChannelOptions = Sequence[tuple[str, Any]]


class Lease:
    """One endpoint's channel plus the count of calls using it (the pool's unit of retirement)."""

    __slots__ = ("callables", "channel", "endpoint_key", "in_flight", "key", "retired")

    def __init__(self, key: str, channel: grpc.aio.Channel, endpoint_key: str | None = None) -> None:
        self.key = key
        self.endpoint_key = endpoint_key or key  # ip:port (``key`` also names the TLS setting, if any)
        self.channel = channel
        self.in_flight = 0
        self.retired = False
        # Multicallables by (kind, method, serializer, deserializer): making one per
        # attempt costs more than the decision; they die with the channel.
        self.callables: dict[tuple[Any, ...], Any] = {}

    def multicallable(
        self, kind: str, method: str, serializer: Callable[[Any], bytes] | None,
        deserializer: Callable[[bytes], Any] | None, registered: bool,
    ) -> Any:
        cache_key = (kind, method, serializer, deserializer)
        found = self.callables.get(cache_key)
        if found is None:
            factory = getattr(self.channel, kind)
            found = self.callables[cache_key] = factory(
                method, request_serializer=serializer, response_deserializer=deserializer,
                _registered_method=registered,
            )
        return found


class EndpointPool:
    """Per-endpoint ``grpc.aio`` channels for one mesh channel."""

    __slots__ = ("_closing", "_credentials", "_leases", "_options")

    def __init__(
        self,
        *,
        authority: str | None = None,
        options: ChannelOptions | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        opts = list(options or ())
        if authority is not None and not any(name == "grpc.default_authority" for name, _ in opts):
            # The server (and TLS verification) sees the logical service name, not the pod IP.
            opts.append(("grpc.default_authority", authority))
        self._options = tuple(opts)
        self._credentials = credentials
        self._leases: dict[str, Lease] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._leases)

    def keys(self) -> list[str]:
        """The endpoints with an open (not retired) channel."""
        return list(self._leases)

    def acquire(self, endpoint: Endpoint, tls: GrpcTls | None = None) -> Lease:
        """The endpoint's channel; with ``tls`` (DestinationRule tls), a TLS channel of its own."""
        key = endpoint.key if tls is None else f"{endpoint.key}|{tls.family}|{tls.key}"
        lease = self._leases.get(key)
        if lease is None:
            target = f"{endpoint.address}:{endpoint.port}"
            if tls is not None:
                options = (*self._options, ("grpc.ssl_target_name_override", tls.target_name))
                channel = grpc.aio.secure_channel(target, tls.credentials, options=options)
                # Credentials of the same setting from before a certificate rotation: retired (closed once idle).
                stale = f"{endpoint.key}|{tls.family}|"
                for old_key in [k for k in self._leases if k.startswith(stale)]:
                    self._retire(old_key)
            elif self._credentials is None:
                channel = grpc.aio.insecure_channel(target, options=self._options)
            else:
                channel = grpc.aio.secure_channel(target, self._credentials, options=self._options)
            lease = self._leases[key] = Lease(key, channel, endpoint.key)
        lease.in_flight += 1
        return lease

    def release(self, lease: Lease) -> None:
        lease.in_flight -= 1
        if lease.retired and lease.in_flight == 0:
            self._close_later(lease)

    def sweep(self, live: set[str]) -> None:
        """Retire the channels of endpoints not in ``live``; idle ones close now, busy ones when done."""
        for key in [k for k, lease in self._leases.items() if lease.endpoint_key not in live]:
            self._retire(key)

    def _retire(self, key: str) -> None:
        lease = self._leases.pop(key)
        lease.retired = True
        if lease.in_flight == 0:
            self._close_later(lease)

    def _close_later(self, lease: Lease) -> None:
        task = asyncio.get_running_loop().create_task(lease.channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self, grace: float | None = None) -> None:
        """Close every channel (in-flight calls get ``grace`` seconds, as ``grpc.aio.Channel.close``)."""
        leases, self._leases = list(self._leases.values()), {}
        await asyncio.gather(*(lease.channel.close(grace) for lease in leases), *self._closing)
