"""What the request path reports about each request, once, when it ends.

The adapters fill one :class:`OutboundRecord` per outbound request (after all
attempts) and one :class:`InboundRecord` per inbound request, and hand it to
the mesh's :class:`TelemetrySink` list — metrics, access log, anything else.
With no sink configured, nothing is built: the request path checks one tuple.

Field names follow Envoy's access-log vocabulary (``response_flags``,
``upstream_host``, ``upstream_cluster``) so the access log and Istio-style
metric labels map one to one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class OutboundRecord:
    """One outbound request through the mesh (Istio ``reporter="source"``)."""

    start_time_unix_ns: int  # wall clock when the request entered the mesh
    duration_s: float  # until response headers (or the local reply)
    method: str
    scheme: str
    authority: str  # Host as the caller sent it (the logical name)
    path: str  # path as sent by the caller, without query
    status: int  # HTTP status the caller received (0 if the call raised)
    response_flags: str  # Envoy flags, comma-separated ("UF,URX"), "-" when none
    attempts: int = 1
    route_name: str | None = None  # VirtualService rule name, "default" for a generated route
    virtual_service: str | None = None  # "namespace/name"
    upstream_cluster: str | None = None  # outbound|port|subset|fqdn
    destination_service: str | None = None  # fqdn
    destination_subset: str | None = None
    destination_port: int | None = None
    upstream_host: str | None = None  # ip:port of the last attempt
    request_id: str | None = None
    user_agent: str | None = None
    request_bytes: int = 0  # Content-Length when known
    response_bytes: int = 0  # Content-Length when known
    grpc_status: int | None = None


@dataclass(slots=True)
class InboundRecord:
    """One inbound request handled behind ``mesh.server_middleware()`` (``reporter="destination"``)."""

    start_time_unix_ns: int
    duration_s: float
    method: str
    scheme: str
    authority: str
    path: str
    status: int
    response_flags: str = "-"
    route: str | None = None  # the server framework's route pattern, if known
    request_id: str | None = None
    user_agent: str | None = None
    source_address: str | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    grpc_status: int | None = None


class TelemetrySink(Protocol):
    """Receives finished requests. Called on the event loop: must not block."""

    def outbound(self, record: OutboundRecord) -> None: ...

    def inbound(self, record: InboundRecord) -> None: ...


def deliver_outbound(sinks: tuple[TelemetrySink, ...], record: OutboundRecord) -> None:
    for sink in sinks:
        sink.outbound(record)


def deliver_inbound(sinks: tuple[TelemetrySink, ...], record: InboundRecord) -> None:
    for sink in sinks:
        sink.inbound(record)
