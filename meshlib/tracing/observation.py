"""What one telemetry-observed outbound request learned on its way, whatever its transport.

The aiohttp and gRPC adapters create an :class:`Observation` only when
telemetry is on; routing fills it (:meth:`Observation.describe`), the runner
fills its :class:`~meshlib.resilience.attempts.CallReport`, and the adapter
turns it into an :class:`~meshlib.tracing.record.OutboundRecord` for the sinks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshlib.decision import Action, Decision
from meshlib.resilience.attempts import CallReport
from meshlib.tracing.record import OutboundRecord

if TYPE_CHECKING:
    from opentelemetry.trace import Span


class Observation:
    """What a telemetry-observed request learned on its way (filled only when telemetry is on)."""

    __slots__ = (
        "authority",
        "cluster",
        "duration_s",
        "end_ns",
        "flags",
        "port",
        "report",
        "route_name",
        "service",
        "span",
        "start_ns",
        "status",
        "subset",
        "virtual_service",
    )

    def __init__(self) -> None:
        self.report = CallReport()
        # When it started and how it ended, set by the adapter (before telemetry is finished).
        self.start_ns = 0
        self.end_ns = 0
        self.duration_s = 0.0
        self.status = 0
        self.flags = "-"
        self.span: Span | None = None
        self.authority: str | None = None
        self.route_name: str | None = None
        self.virtual_service: str | None = None
        self.cluster: str | None = None
        self.service: str | None = None
        self.subset: str | None = None
        self.port: int | None = None

    def outbound_record(
        self,
        *,
        start_time_unix_ns: int,
        duration_s: float,
        method: str,
        scheme: str,
        authority: str,
        path: str,
        status: int,
        flags: str,
        request_id: str | None,
        user_agent: str | None,
        request_bytes: int = 0,
        grpc_status: int | None = None,
    ) -> OutboundRecord:
        """The record for the telemetry sinks, with what routing and the runner learned."""
        report = self.report
        return OutboundRecord(
            start_time_unix_ns=start_time_unix_ns,
            duration_s=duration_s,
            method=method,
            scheme=scheme,
            authority=self.authority or authority,
            path=path,
            status=status,
            response_flags=flags,
            attempts=max(report.attempts, 1),
            route_name=self.route_name,
            virtual_service=self.virtual_service,
            upstream_cluster=self.cluster,
            destination_service=self.service,
            destination_subset=self.subset,
            destination_port=self.port,
            upstream_host=report.upstream_host,
            request_id=request_id,
            user_agent=user_agent,
            request_bytes=request_bytes,
            grpc_status=grpc_status,
        )

    def describe(self, decision: Decision, authority: str) -> None:
        self.authority = authority
        route = decision.route
        if route is not None:
            self.route_name = route.source.rule_name or str(route.source.rule_index)
            self.virtual_service = route.source.virtual_service
        destination = decision.destination
        if destination is not None:
            self.cluster = destination.cluster
            self.service = destination.host
            self.subset = destination.subset or None
            self.port = destination.port
        elif decision.action is Action.PASSTHROUGH:
            self.cluster = "PassthroughCluster"
