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
    from meshlib.tracing.client_spans import ClientSpan
    from meshlib.tracing.telemetry import Telemetry


class Observation(CallReport):
    """What a telemetry-observed request learned on its way (filled only when telemetry is on).

    It is also the :class:`CallReport` the runner fills (attempts, upstream host, delay).

    Routing hands over its :class:`Decision` (:meth:`describe`); the names
    derived from it are computed only when telemetry is finished, off the
    response path.
    """

    __slots__ = (
        "_cluster",
        "_decision",
        "authority",
        "duration_s",
        "end_ns",
        "flags",
        "span",
        "start_ns",
        "started",
        "status",
        "telemetry",
        "url",
    )

    def __init__(self) -> None:
        self.attempts = 0  # CallReport's fields, assigned here: one call less per request
        self.upstream_host: str | None = None
        self.delay_injected = False
        self.span: ClientSpan | None = None
        self.authority: str | None = None
        self._decision: Decision | None = None
        self._cluster: str | None = None
        # When it started and how it ended, set by the adapter (before telemetry is finished).
        self.start_ns = 0
        self.end_ns = 0
        self.duration_s = 0.0
        self.status = 0
        self.flags = "-"
        # Set by the adapter that began the observation, for the one that finishes it.
        self.telemetry: Telemetry | None = None
        self.started = 0.0  # time.perf_counter() at the start
        self.url: object = None  # the URL the caller asked for

    def describe(self, decision: Decision, authority: str) -> None:
        self.authority = authority
        self._decision = decision

    @property
    def decision(self) -> Decision | None:
        """The routing decision :meth:`describe` was given (None before, or for an unrouted call)."""
        return self._decision

    @property
    def cluster_override(self) -> str | None:
        """The cluster set by the adapter in place of the decision's (see :attr:`cluster`)."""
        return self._cluster

    @property
    def route_name(self) -> str | None:
        route = self._decision.route if self._decision is not None else None
        return None if route is None else route.source.rule_name or str(route.source.rule_index)

    @property
    def virtual_service(self) -> str | None:
        route = self._decision.route if self._decision is not None else None
        return None if route is None else route.source.virtual_service

    @property
    def cluster(self) -> str | None:
        if self._cluster is not None:
            return self._cluster
        decision = self._decision
        if decision is None:
            return None
        if decision.destination is not None:
            return decision.destination.cluster
        return "PassthroughCluster" if decision.action is Action.PASSTHROUGH else None

    @cluster.setter
    def cluster(self, name: str) -> None:
        self._cluster = name

    @property
    def service(self) -> str | None:
        destination = self._decision.destination if self._decision is not None else None
        return None if destination is None else destination.host

    @property
    def subset(self) -> str | None:
        destination = self._decision.destination if self._decision is not None else None
        return None if destination is None else destination.subset or None

    @property
    def port(self) -> int | None:
        destination = self._decision.destination if self._decision is not None else None
        return None if destination is None else destination.port

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
        return OutboundRecord(
            start_time_unix_ns=start_time_unix_ns,
            duration_s=duration_s,
            method=method,
            scheme=scheme,
            authority=self.authority or authority,
            path=path,
            status=status,
            response_flags=flags,
            attempts=max(self.attempts, 1),
            route_name=self.route_name,
            virtual_service=self.virtual_service,
            upstream_cluster=self.cluster,
            destination_service=self.service,
            destination_subset=self.subset,
            destination_port=self.port,
            upstream_host=self.upstream_host,
            request_id=request_id,
            user_agent=user_agent,
            request_bytes=request_bytes,
            grpc_status=grpc_status,
        )
