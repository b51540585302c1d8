"""Parsed, validated Istio resources, before cross-resource compilation.

These hold what a single document says, with model types wherever a value is
already final (matches, rewrites, pool settings) and the Istio shape wherever
compilation still needs it: traffic policy components stay optional so the
subset/port merge can tell "unset" from "set to the default", and destination
hosts stay as written until every ServiceEntry is known.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshlib.config.model import (
    EMPTY_LABELS,
    ClientTls,
    ConnectionPool,
    CorsPolicy,
    DirectResponse,
    FaultPolicy,
    HeaderPolicy,
    Labels,
    LbKind,
    LbPolicy,
    Locality,
    OutlierDetection,
    RateLimitSpec,
    Redirect,
    RetryBudgetSpec,
    RetryPolicy,
    Rewrite,
    RouteMatch,
    ServicePort,
)
from meshlib.config.peer_authentication import PeerAuthenticationSpec
from meshlib.config.security_model import AuthorizationPolicySpec

NO_LOCALITY = Locality()
Resolution = str  # "STATIC" | "DNS" | "DNS_ROUND_ROBIN" | "NONE"


@dataclass(frozen=True, slots=True)
class Meta:
    """Identity and origin of one document."""

    file: str
    line: int
    kind: str
    namespace: str
    name: str
    annotations: tuple[tuple[str, str], ...] = ()
    annotation_lines: tuple[tuple[str, int], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()  # metadata.labels

    def annotation_line(self, key: str) -> int:
        """Line of annotation ``key`` (the document's first line when unknown)."""
        return dict(self.annotation_lines).get(key, self.line)

    @property
    def ref(self) -> str:
        """``namespace/name``, as used in RouteSource and messages."""
        return f"{self.namespace}/{self.name}"


# --------------------------------------------------------------------------- ServiceEntry


@dataclass(frozen=True, slots=True)
class WorkloadEndpoint:
    """A ServiceEntry ``endpoints`` entry (Istio WorkloadEntry)."""

    address: str
    ports: tuple[tuple[str, int], ...] = ()
    labels: Labels = EMPTY_LABELS
    locality: Locality = NO_LOCALITY
    weight: int = 1


@dataclass(frozen=True, slots=True)
class ServiceEntrySpec:
    meta: Meta
    hosts: tuple[tuple[str, int], ...]  # (resolved host, line)
    ports: tuple[ServicePort, ...]
    resolution: Resolution
    location: str
    endpoints: tuple[WorkloadEndpoint, ...]
    subject_alt_names: tuple[str, ...] = ()  # the service's identities (ISTIO_MUTUAL verifies them)
    # workloadSelector.labels: endpoints come from the WorkloadEntries of the namespace it selects
    workload_selector: Labels | None = None


@dataclass(frozen=True, slots=True)
class WorkloadEntrySpec:
    """A WorkloadEntry: one workload (a VM, a process) that ServiceEntry ``workloadSelector`` can select."""

    meta: Meta
    endpoint: WorkloadEndpoint  # its labels are spec.labels over metadata.labels


# --------------------------------------------------------------------------- DestinationRule


@dataclass(frozen=True, slots=True)
class OutlierSetting:
    """An ``outlierDetection`` block: the Envoy settings plus Istio's minHealthPercent."""

    detection: OutlierDetection
    min_health_percent: float = 0.0


@dataclass(frozen=True, slots=True)
class PolicyParts:
    """One Istio TrafficPolicy (or PortTrafficPolicy): each component None when unset."""

    lb: LbPolicy | None = None
    pool: ConnectionPool | None = None
    outlier: OutlierSetting | None = None
    tls: ClientTls | None = None
    port_level: tuple[tuple[int, PolicyParts], ...] = ()
    retry_budget: RetryBudgetSpec | None = None  # TrafficPolicy-level only (no port-level form)

    def for_port(self, port: int) -> tuple[PolicyParts, bool]:
        """Istio's GetPortLevelTrafficPolicy: the port-level policy (wholesale) when one exists."""
        for number, parts in self.port_level:
            if number == port:
                return parts, True
        return self, False


@dataclass(frozen=True, slots=True)
class SubsetSpec:
    name: str
    labels: Labels
    policy: PolicyParts | None
    line: int


@dataclass(frozen=True, slots=True)
class DestinationRuleSpec:
    meta: Meta
    host: str  # as written (resolved at compile time)
    host_line: int
    policy: PolicyParts | None
    subsets: tuple[SubsetSpec, ...]
    lb_override: LbKind | None = None  # meshlib.io/load-balancer annotation
    workload_selector: Labels | None = None
    rate_limit: RateLimitSpec | None = None  # meshlib.io/local-rate-limit annotation


# --------------------------------------------------------------------------- VirtualService


@dataclass(frozen=True, slots=True)
class DestinationRef:
    """An Istio ``Destination`` as written, with where it was written."""

    host: str
    subset: str
    port: int | None
    line: int  # line of ``host``
    path: str  # e.g. spec.http[0].route[1].destination
    subset_line: int = 0


@dataclass(frozen=True, slots=True)
class RouteDestinationSpec:
    destination: DestinationRef
    weight: int
    headers: HeaderPolicy


@dataclass(frozen=True, slots=True)
class MirrorSpec:
    destination: DestinationRef
    percent: float


@dataclass(frozen=True, slots=True)
class HttpRuleSpec:
    index: int
    name: str
    line: int
    path: str
    matches: tuple[RouteMatch, ...]
    route: tuple[RouteDestinationSpec, ...] = ()
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    delegate: tuple[str, str] | None = None  # (namespace, name)
    rewrite: Rewrite | None = None
    timeout_s: float | None = None
    has_timeout: bool = False
    retry: RetryPolicy | None = None
    has_retries: bool = False
    ignore_previous_hosts: bool | None = None  # retries.retryIgnorePreviousHosts when set
    fault: FaultPolicy | None = None
    mirrors: tuple[MirrorSpec, ...] = ()
    cors: CorsPolicy | None = None
    headers: HeaderPolicy | None = None


@dataclass(frozen=True, slots=True)
class VirtualServiceSpec:
    meta: Meta
    hosts: tuple[tuple[str, int], ...]  # (host as written, lower-cased; line)
    gateways: tuple[str, ...]
    http: tuple[HttpRuleSpec, ...]
    rate_limit: RateLimitSpec | None = None  # meshlib.io/local-rate-limit annotation

    @property
    def applies_to_sidecars(self) -> bool:
        """No ``gateways`` means ``mesh``; otherwise ``mesh`` must be listed."""
        return not self.gateways or "mesh" in self.gateways


@dataclass(frozen=True, slots=True)
class SidecarSpec:
    """A Sidecar: what the selected workloads see (egress hosts) and their outbound traffic policy."""

    meta: Meta
    workload_selector: Labels | None
    egress_hosts: tuple[tuple[str, str], ...]  # (namespace or "*" / "~", host or "*"), "." already resolved
    outbound_traffic_policy: str = ""  # "", "ALLOW_ANY" or "REGISTRY_ONLY"
    has_egress: bool = False


@dataclass(frozen=True, slots=True)
class EmptyMeshMarker:
    """``apiVersion: meshlib.io/v1, kind: EmptyMesh``: an empty configuration is intended.

    A hot reload that would remove every service and route at once is refused
    (a truncated or half-written file looks exactly like that) unless the new
    configuration carries this document.
    """

    meta: Meta


IstioResource = (
    ServiceEntrySpec
    | DestinationRuleSpec
    | VirtualServiceSpec
    | AuthorizationPolicySpec
    | PeerAuthenticationSpec
    | EmptyMeshMarker
    | WorkloadEntrySpec
    | SidecarSpec
)
