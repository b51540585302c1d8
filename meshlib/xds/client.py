"""The meshlib ADS client: SotW (``StreamAggregatedResources``) and delta (``DeltaAggregatedResources``).

One stream to the management server carries every type, as Envoy's ADS mode
and grpc-go's xdsclient do:

- subscriptions: LDS and CDS wildcard; RDS for the route configurations the
  listeners name and EDS for the EDS clusters (see :mod:`client_state`);
  a changed subscription is sent right after the ACK of the response that
  changed it (Envoy: CDS ACK, then the EDS request);
- ACK = ``version_info`` + ``response_nonce`` of the response (SotW) or the
  nonce (delta); NACK = the nonce, the last ACKed version and
  ``error_detail`` (``google.rpc.Status``, INVALID_ARGUMENT) whose message
  lists ``Type name: field: message`` for every rejected resource;
- the stream breaks → the last good snapshot keeps serving; reconnect with
  jittered exponential backoff (tenacity, ``wait_random_exponential``), reset
  once a stream has delivered a response (grpc-go resets it the same way);
  each attempt uses a fresh channel so grpc's own channel backoff does not
  stack on ours; on reconnect the client re-sends every subscription with the
  versions it holds (SotW ``version_info``, delta ``initial_resource_versions``);
- snapshots are handed to ``on_snapshot`` whenever the accepted resources
  assemble into a new consistent one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Literal

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]
from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from meshlib.config.model import MeshSnapshot, WorkloadIdentity
from meshlib.xds import type_urls
from meshlib.xds.channel_creds import ChannelCredentialsError, XdsChannelCredentials
from meshlib.xds.client_state import NAMED_TYPES, SUBSCRIBE_ORDER, WILDCARD_TYPES, ClientState, Rejected
from meshlib.xds.decode_common import XdsDecodeError

__all__ = ["Protocol", "StreamEnded", "XdsClient"]

log = logging.getLogger("meshlib.xds.client")

Protocol = Literal["sotw", "delta"]
# The type whose accepted resources decide another type's subscription.
_DEPENDENT = {type_urls.CLUSTER: type_urls.CLUSTER_LOAD_ASSIGNMENT, type_urls.LISTENER: type_urls.ROUTE_CONFIGURATION}


class StreamEnded(Exception):
    """The ADS stream closed or failed before it delivered anything (retried with backoff)."""


class XdsClient:
    """An ADS client feeding ``on_snapshot``; run it with :meth:`run` (until cancelled)."""

    def __init__(
        self,
        server_uri: str,
        node: Any,
        workload: WorkloadIdentity,
        on_snapshot: Callable[[MeshSnapshot], None],
        *,
        protocol: Protocol = "sotw",
        initial_fetch_timeout_s: float = 15.0,
        backoff_multiplier_s: float = 0.2,
        backoff_max_s: float = 30.0,
        channel_credentials: XdsChannelCredentials | None = None,
    ) -> None:
        if protocol not in ("sotw", "delta"):
            raise ValueError(f"protocol must be 'sotw' or 'delta', not {protocol!r}")
        self.server_uri = server_uri
        self.node = node
        # bootstrap channel_creds; TLS files are re-read per connection (rotation), never downgraded
        self.channel_credentials = channel_credentials or XdsChannelCredentials()
        self.protocol: Protocol = protocol
        self.initial_fetch_timeout_s = initial_fetch_timeout_s
        self.backoff_multiplier_s = backoff_multiplier_s
        self.backoff_max_s = backoff_max_s
        self.state = ClientState(workload)
        self.connected = False
        self.connects = 0  # streams that delivered at least one response
        self.publishes = 0
        self.last_stream_error: str | None = None
        self._on_snapshot = on_snapshot
        self._changed = asyncio.Event()
        self._timers: list[asyncio.TimerHandle] = []
        self._dangling_timer: asyncio.TimerHandle | None = None
        self._allow_dangling = False
        self._nonces: dict[str, str] = {}  # SotW: the latest nonce per type on the current stream

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Keep an ADS stream open until cancelled, reconnecting with jittered backoff."""
        self._arm(None, None)  # the initial fetch timeout of the wildcard types
        try:
            while True:
                # A new AsyncRetrying per run of the loop: its attempt count (the
                # backoff) restarts after every stream that delivered something.
                retrying = AsyncRetrying(
                    wait=wait_random_exponential(multiplier=self.backoff_multiplier_s, max=self.backoff_max_s),
                    retry=retry_if_exception_type(Exception),
                    before_sleep=self._before_sleep,
                )
                async for attempt in retrying:
                    with attempt:
                        await self._stream()
        finally:
            self.connected = False
            for timer in [*self._timers, self._dangling_timer]:
                if timer is not None:
                    timer.cancel()

    def _before_sleep(self, retry_state: Any) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome is not None else None
        log.warning(
            "xDS stream to %s failed (%s); reconnecting in %.2fs, serving the last good configuration",
            self.server_uri,
            error,
            retry_state.upcoming_sleep,
        )

    async def _stream(self) -> None:
        """One stream: returns when a stream that delivered responses ends; raises when it never did."""
        delivered = False
        try:
            async with self.channel_credentials.channel(self.server_uri) as channel:
                stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
                delta = self.protocol == "delta"
                call = stub.DeltaAggregatedResources() if delta else stub.StreamAggregatedResources()
                self._nonces.clear()
                try:
                    for request in self._initial_requests():
                        await call.write(request)
                    while True:
                        response = await call.read()
                        if response is grpc.aio.EOF:
                            raise StreamEnded("the server closed the stream")
                        if not delivered:
                            delivered, self.connected = True, True
                            self.connects += 1
                            log.info("xDS stream to %s established (%s)", self.server_uri, self.protocol)
                        handle = self._on_delta if delta else self._on_sotw
                        for request in handle(response):
                            await call.write(request)
                        self._notify()
                finally:
                    call.cancel()
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, StreamEnded, ChannelCredentialsError) as exc:
            self.last_stream_error = str(exc.details() if isinstance(exc, grpc.aio.AioRpcError) else exc)
            if not delivered:
                raise StreamEnded(self.last_stream_error) from None
            log.warning("xDS stream to %s ended: %s; reconnecting", self.server_uri, self.last_stream_error)
        finally:
            if self.connected:
                self.connected = False
                self._notify()

    # ------------------------------------------------------------------ requests

    def _initial_requests(self) -> list[Any]:
        out: list[Any] = []
        for type_url in SUBSCRIBE_ORDER:
            names = self.state.names.get(type_url)
            if names is not None and not names:
                continue  # nothing to ask for yet: RDS/EDS follow LDS/CDS
            if self.protocol == "delta":
                known = self.state.versions[type_url]
                request = discovery_pb2.DeltaDiscoveryRequest(
                    type_url=type_url,
                    resource_names_subscribe=sorted(names) if names is not None else [],
                    initial_resource_versions={n: v for n, v in known.items() if names is None or n in names},
                )
            else:
                request = discovery_pb2.DiscoveryRequest(
                    type_url=type_url,
                    resource_names=sorted(names) if names is not None else [],
                    version_info=self.state.types[type_url].version_acked,
                )
            out.append(request)
        out[0].node.CopyFrom(self.node)  # the first request of a stream carries the node
        return out

    def _sotw_request(self, type_url: str, *, nonce: str, error: str | None = None) -> Any:
        names = self.state.names.get(type_url)
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            resource_names=sorted(names) if names is not None else [],
            version_info=self.state.types[type_url].version_acked,
            response_nonce=nonce,
        )
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=error))
        return request

    # ------------------------------------------------------------------ responses

    def _on_sotw(self, response: Any) -> list[Any]:
        type_url = response.type_url
        self._nonces[type_url] = response.nonce
        if type_url not in SUBSCRIBE_ORDER:
            return [self._sotw_request(type_url, nonce=response.nonce, error=f"unsupported type {type_url}")]
        try:
            decoded = self.state.decode_all(type_url, response.resources)
            if type_url in NAMED_TYPES:  # grpc-go ignores resources it did not ask for
                wanted = self.state.names[type_url]
                decoded = {n: m for n, m in decoded.items() if n in wanted}
            self.state.apply(type_url, decoded, (), complete=type_url in WILDCARD_TYPES)
        except Rejected as exc:
            self._reject(type_url, response.version_info, str(exc))
            return [self._sotw_request(type_url, nonce=response.nonce, error=str(exc))]
        self.state.accepted(type_url, response.version_info)
        out = [self._sotw_request(type_url, nonce=response.nonce)]
        dependent = _DEPENDENT.get(type_url)
        if dependent is not None and self._resubscribe(dependent) is not None:
            out.append(self._sotw_request(dependent, nonce=self._nonces.get(dependent, "")))
        self._try_publish()
        return out

    def _on_delta(self, response: Any) -> list[Any]:
        type_url = response.type_url
        ack = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=response.nonce)
        try:
            if type_url not in SUBSCRIBE_ORDER:
                raise Rejected(f"unsupported type {type_url}")
            carried = [r for r in response.resources if r.HasField("resource")]
            decoded = self.state.decode_all(type_url, [r.resource for r in carried])
            versions = {r.name or n: r.version for r, n in zip(carried, decoded, strict=True)}
            self.state.apply(type_url, decoded, response.removed_resources, complete=False, versions=versions)
        except Rejected as exc:
            self._reject(type_url, response.system_version_info, str(exc))
            ack.error_detail.CopyFrom(status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(exc)))
            return [ack]
        self.state.accepted(type_url, response.system_version_info)
        out = [ack]
        dependent = _DEPENDENT.get(type_url)
        change = self._resubscribe(dependent) if dependent is not None else None
        if dependent is not None and change is not None:
            added, dropped = change
            out.append(
                discovery_pb2.DeltaDiscoveryRequest(
                    type_url=dependent,
                    resource_names_subscribe=sorted(added),
                    resource_names_unsubscribe=sorted(dropped),
                )
            )
        self._try_publish()
        return out

    def _reject(self, type_url: str, version: str, error: str) -> None:
        self.state.rejected(type_url, version, error)
        log.error(
            "xDS %s version %r rejected (NACK); keeping the last good resources:\n%s",
            type_urls.short_name(type_url),
            version,
            error,
        )

    def _resubscribe(self, type_url: str) -> tuple[frozenset[str], frozenset[str]] | None:
        change = self.state.resubscribe(type_url)
        if change is not None:
            for name in change[0]:
                self._arm(type_url, name)
        return change

    # ------------------------------------------------------------------ timers and publishing

    def _arm(self, type_url: str | None, name: str | None) -> None:
        loop = asyncio.get_running_loop()
        self._timers = [t for t in self._timers if not t.cancelled() and t.when() > loop.time()]
        self._timers.append(loop.call_later(self.initial_fetch_timeout_s, self._expire, type_url, name))

    def _expire(self, type_url: str | None, name: str | None) -> None:
        expired = self.state.expire(type_url, name)
        if expired:
            log.warning(
                "xDS resources not received within %.1fs, treated as absent: %s",
                self.initial_fetch_timeout_s,
                ", ".join(expired),
            )
            self._try_publish()
            self._notify()

    def _allow_dangling_now(self) -> None:
        self._dangling_timer = None
        self._allow_dangling = True
        self._try_publish()
        self._notify()

    def _try_publish(self) -> None:
        try:
            snapshot, missing = self.state.build(allow_dangling=self._allow_dangling)
        except XdsDecodeError:  # cannot happen for accepted resources; never take the stream down for it
            log.exception("building the xDS snapshot failed; the last good configuration stays")
            return
        if snapshot is None:
            if missing and self._dangling_timer is None:
                # Routes name clusters not received yet: wait for them (make-before-break), but not forever.
                log.info("xDS snapshot held back: routes reference clusters not received yet: %s", ", ".join(missing))
                loop = asyncio.get_running_loop()
                self._dangling_timer = loop.call_later(self.initial_fetch_timeout_s, self._allow_dangling_now)
            return
        if missing:
            log.warning("xDS snapshot published with routes to missing clusters: %s", ", ".join(missing))
        if self._dangling_timer is not None:
            self._dangling_timer.cancel()
            self._dangling_timer = None
        self._allow_dangling = False
        self._on_snapshot(snapshot)
        self.publishes += 1
        log.info("xDS configuration version %s in force", snapshot.version)

    def _notify(self) -> None:
        self._changed.set()

    async def wait_for_version(self, condition: int | Callable[[XdsClient], bool] = 1, timeout_s: float = 10.0) -> None:
        """Wait until ``condition`` holds: an int = that many snapshots published; a callable gets the client.

        Re-evaluated after every response, publish, timeout and connect/disconnect;
        raises TimeoutError after ``timeout_s``.
        """

        def check() -> bool:
            return self.publishes >= condition if isinstance(condition, int) else condition(self)

        async with asyncio.timeout(timeout_s):
            while not check():
                self._changed.clear()
                await self._changed.wait()

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        counts = self.state.counts()
        published = self.state.published
        return {
            "server": self.server_uri,
            "protocol": self.protocol,
            "channel_credentials": self.channel_credentials.describe(),
            "node_id": self.node.id,
            "connected": self.connected,
            "connects": self.connects,
            "last_stream_error": self.last_stream_error,
            "publishes": self.publishes,
            "snapshot_version": published.version if published is not None else "",
            "pending": self.state.pending(),
            "timed_out": list(self.state.timed_out),
            "types": {type_urls.short_name(t): self.state.types[t].to_dict(counts[t]) for t in SUBSCRIBE_ORDER},
        }
