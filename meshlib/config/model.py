"""The frozen, xDS-shaped configuration model.

Every configuration source (Istio YAML, xDS, Consul) compiles into these
types, and the request path reads only them. Everything here is immutable:
a new configuration is a new :class:`MeshSnapshot`, published by swapping one
reference. Per-endpoint runtime state (active requests, ejections, latency)
lives apart, in :mod:`meshlib.host_stats`, so a swap does not reset it.

Shapes follow Envoy's resources (listener → route configuration → virtual
host → route → weighted clusters; cluster → locality endpoints), keeping only
the fields meshlib acts on. Durations are float seconds; percentages are
floats in 0..100.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

from meshlib.config.security_model import NO_SECURITY_POLICIES, SecurityPolicies

UINT32_MAX = 2**32 - 1

# Metadata of a field computed from the others in __post_init__ (kept for the request path):
# not configuration, so dumps and comparisons leave it out.
DERIVED: Mapping[str, bool] = MappingProxyType({"derived": True})


class Labels(Mapping[str, str]):
    """An immutable, hashable string mapping (endpoint and workload labels)."""

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items: dict[str, str] = dict(items or {})
        self._hash = hash(frozenset(self._items.items()))

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def __repr__(self) -> str:
        return f"Labels({self._items!r})"

    def selects(self, selector: Mapping[str, str]) -> bool:
        """True when every ``selector`` label is present with the same value."""
        return all(self._items.get(k) == v for k, v in selector.items())


EMPTY_LABELS = Labels()


def cluster_name(port: int, subset: str, fqdn: str) -> str:
    """Istio's outbound cluster name: ``outbound|<port>|<subset>|<fqdn>``."""
    return f"outbound|{port}|{subset}|{fqdn}"


# --------------------------------------------------------------------------- endpoints


@dataclass(frozen=True, slots=True)
class Locality:
    region: str = ""
    zone: str = ""
    subzone: str = ""

    @classmethod
    def parse(cls, text: str) -> Locality:
        """Parse Istio's ``region/zone/subzone`` form (trailing parts optional)."""
        parts = [*text.split("/"), "", "", ""][:3] if text else ["", "", ""]
        return cls(parts[0], parts[1], parts[2])

    def __str__(self) -> str:
        return "/".join(p for p in (self.region, self.zone, self.subzone) if p)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One host of a cluster. ``address`` is an IP, or a DNS name to resolve at dial time."""

    address: str
    port: int
    weight: int = 1
    labels: Labels = EMPTY_LABELS
    locality: Locality = Locality()
    priority: int = 0
    # Identity of the host for runtime state (shared across clusters and swaps): "address:port".
    key: str = field(init=False, repr=False, compare=False, metadata=DERIVED)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.address}:{self.port}")  # read on every attempt


# --------------------------------------------------------------------------- cluster policy


class LbKind(StrEnum):
    ROUND_ROBIN = "ROUND_ROBIN"
    RANDOM = "RANDOM"
    LEAST_REQUEST = "LEAST_REQUEST"
    RING_HASH = "RING_HASH"
    MAGLEV = "MAGLEV"
    PEAK_EWMA = "PEAK_EWMA"  # meshlib extension (Finagle/Linkerd); Envoy has none
    PASSTHROUGH = "PASSTHROUGH"  # dial the original destination


@dataclass(frozen=True, slots=True)
class HashPolicy:
    """One consistent-hash input. Several combine as Envoy's hash_policy list."""

    kind: Literal["header", "cookie", "source_ip", "query_parameter"]
    name: str = ""  # header / cookie / query parameter name
    terminal: bool = False
    cookie_ttl_s: float | None = None
    cookie_path: str = ""


@dataclass(frozen=True, slots=True)
class LocalityDistribute:
    """``distribute`` entry: traffic from ``from_`` goes to localities by weight."""

    from_: str
    to: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class LocalityFailover:
    from_: str
    to: str


@dataclass(frozen=True, slots=True)
class LocalityLbSetting:
    enabled: bool = True
    distribute: tuple[LocalityDistribute, ...] = ()
    failover: tuple[LocalityFailover, ...] = ()
    failover_priority: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Warmup:
    """Slow start: weight ramps from ``min_weight_percent`` over ``duration_s``."""

    duration_s: float
    min_weight_percent: float = 10.0
    aggression: float = 1.0


@dataclass(frozen=True, slots=True)
class LbPolicy:
    kind: LbKind = LbKind.LEAST_REQUEST  # Istio's default when nothing is set
    hash_policies: tuple[HashPolicy, ...] = ()
    ring_min_size: int = 1024
    ring_max_size: int = 8_388_608
    maglev_table_size: int = 65537
    choice_count: int = 2
    active_request_bias: float = 1.0
    locality: LocalityLbSetting | None = None
    warmup: Warmup | None = None
    # 50 (Envoy) unless the DestinationRule has outlierDetection, then minHealthPercent.
    panic_threshold_percent: float = 50.0
    # Istio applies locality failover only when outlier detection is configured.
    failover_enabled: bool = False
    peak_ewma_decay_s: float = 10.0


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    """Istio connectionPool mapped to Envoy circuit-breaker thresholds (Istio defaults)."""

    max_connections: int = UINT32_MAX
    connect_timeout_s: float = 10.0
    tcp_keepalive: bool = False
    max_pending_requests: int = UINT32_MAX
    max_requests: int = UINT32_MAX
    max_retries: int = UINT32_MAX
    max_requests_per_connection: int = 0  # 0 = unlimited, 1 = no keep-alive
    idle_timeout_s: float = 3600.0
    h2_upgrade_policy: str = "DEFAULT"
    use_client_protocol: bool = False
    max_concurrent_streams: int | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Envoy outlier detection, with Istio's mapping applied (semantics.md §2)."""

    consecutive_5xx: int = 5
    enforcing_consecutive_5xx: float = 100.0
    consecutive_gateway_failure: int = 5
    enforcing_consecutive_gateway_failure: float = 0.0
    consecutive_local_origin_failure: int = 5
    split_external_local_origin_errors: bool = False
    interval_s: float = 10.0
    base_ejection_time_s: float = 30.0
    max_ejection_time_s: float = 300.0
    max_ejection_percent: float = 10.0
    always_eject_one_host: bool = False
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    success_rate_stdev_factor: float = 1.9
    enforcing_success_rate: float = 0.0  # Istio sets 0
    failure_percentage_threshold: float = 85.0
    failure_percentage_minimum_hosts: int = 5
    failure_percentage_request_volume: int = 50
    enforcing_failure_percentage: float = 0.0


@dataclass(frozen=True, slots=True)
class RateLimitSpec:
    """meshlib's local rate limit (annotation ``meshlib.io/local-rate-limit``): Envoy's token bucket."""

    max_tokens: int
    tokens_per_fill: int = 1
    fill_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class RetryBudgetSpec:
    """Istio ``trafficPolicy.retryBudget`` = Envoy ``retry_budget``: replaces ``max_retries``."""

    percent: float = 20.0
    min_retry_concurrency: int = 3


TlsMode = Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]


@dataclass(frozen=True, slots=True)
class ClientTls:
    """Istio ``ClientTLSSettings`` of one cluster: how the client side of its connections does TLS.

    File fields are paths as written (validated to exist and parse when the
    configuration is loaded); "" when unset. For ``ISTIO_MUTUAL`` the
    certificates come from the workload's identity (``mesh.certificates``),
    and ``subject_alt_names`` (when empty) is filled from the destination
    service's accounts (ServiceEntry ``subjectAltNames``).
    """

    mode: TlsMode = "DISABLE"
    ca_certificates: str = ""
    client_certificate: str = ""
    private_key: str = ""
    sni: str = ""
    subject_alt_names: tuple[str, ...] = ()
    insecure_skip_verify: bool = False
    ca_crl: str = ""

    @property
    def enabled(self) -> bool:
        return self.mode != "DISABLE"


NO_TLS = ClientTls()


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    """The resolved policy of one cluster (top level, subset and port merged)."""

    lb: LbPolicy = LbPolicy()
    connection_pool: ConnectionPool = ConnectionPool()
    outlier_detection: OutlierDetection | None = None
    tls: ClientTls = NO_TLS
    rate_limit: RateLimitSpec | None = None  # one bucket per cluster
    retry_budget: RetryBudgetSpec | None = None

    @property
    def tls_mode(self) -> TlsMode:
        """``tls.mode`` (kept for callers that only need the mode)."""
        return self.tls.mode


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str  # outbound|<port>|<subset>|<fqdn>
    service: str  # fqdn
    port: int
    subset: str
    endpoints: tuple[Endpoint, ...]
    policy: TrafficPolicy = TrafficPolicy()
    resolution: Literal["STATIC", "DNS", "DNS_ROUND_ROBIN", "NONE"] = "STATIC"


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True, slots=True)
class StringMatch:
    """Istio StringMatch. ``present`` is the empty ``{}`` form; regex is an RE2 full match."""

    kind: Literal["exact", "prefix", "regex", "present"]
    value: str = ""
    ignore_case: bool = False  # exact/prefix only (ignoreUriCase)


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """One Istio ``match`` block: every field set must hold (AND)."""

    name: str = ""
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: tuple[tuple[str, StringMatch], ...] = ()
    without_headers: tuple[tuple[str, StringMatch], ...] = ()
    query_params: tuple[tuple[str, StringMatch], ...] = ()
    # Workload-identity fields, decided when the snapshot is built for a workload.
    port: int | None = None
    source_labels: Labels = EMPTY_LABELS
    source_namespace: str = ""
    gateways: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HeaderOps:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()
    empty: bool = field(init=False, repr=False, compare=False, metadata=DERIVED)  # checked on every request

    def __post_init__(self) -> None:
        object.__setattr__(self, "empty", not (self.set or self.add or self.remove))


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    request: HeaderOps = HeaderOps()
    response: HeaderOps = HeaderOps()


@dataclass(frozen=True, slots=True)
class WeightedCluster:
    """One route destination: a cluster, its Istio host/port/subset, a relative weight."""

    cluster: str
    host: str  # fqdn
    port: int
    subset: str = ""
    weight: int = 100
    headers: HeaderPolicy = HeaderPolicy()


@dataclass(frozen=True, slots=True)
class Rewrite:
    uri: str | None = None
    authority: str | None = None
    uri_regex: tuple[str, str] | None = None  # (RE2 pattern, rewrite with \N groups)


@dataclass(frozen=True, slots=True)
class Redirect:
    uri: str | None = None
    authority: str | None = None
    scheme: str | None = None
    port: int | None = None
    derive_port: Literal["", "FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] = ""
    code: int = 301


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Envoy retry policy as Istio emits it. ``num_retries`` excludes the first try."""

    num_retries: int
    retry_on: tuple[str, ...]
    per_try_timeout_s: float | None = None
    retriable_status_codes: tuple[int, ...] = ()
    retry_remote_localities: bool = False
    backoff_base_s: float = 0.025
    backoff_max_s: float = 0.25
    previous_hosts: bool = True
    host_selection_attempts: int = 5


# Istio's mesh-wide default when a route has no ``retries`` (semantics.md §4).
ISTIO_DEFAULT_RETRY = RetryPolicy(
    num_retries=2,
    retry_on=("connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"),
)


@dataclass(frozen=True, slots=True)
class FaultPolicy:
    """VirtualService ``fault``. A part whose percentage is 0 never fires."""

    delay_s: float | None = None
    delay_percent: float = 0.0
    abort_http_status: int | None = None
    abort_grpc_status: int | None = None
    abort_percent: float = 0.0


@dataclass(frozen=True, slots=True)
class Mirror:
    cluster: str
    host: str
    port: int
    subset: str = ""
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age_s: float | None = None
    allow_credentials: bool | None = None


@dataclass(frozen=True, slots=True)
class RouteSource:
    """Where a route came from, for explain and errors."""

    virtual_service: str | None  # "namespace/name", None for a generated default route
    rule_name: str
    rule_index: int
    file: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class Route:
    matches: tuple[RouteMatch, ...]  # OR; empty = match everything
    source: RouteSource
    destinations: tuple[WeightedCluster, ...] = ()
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    rewrite: Rewrite | None = None
    timeout_s: float | None = None  # None = disabled (Istio default)
    retry: RetryPolicy | None = ISTIO_DEFAULT_RETRY
    fault: FaultPolicy | None = None
    mirrors: tuple[Mirror, ...] = ()
    headers: HeaderPolicy = HeaderPolicy()
    cors: CorsPolicy | None = None
    rate_limit: RateLimitSpec | None = None  # one bucket per route


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str  # "<fqdn>:<port>"
    domains: tuple[str, ...]  # lower-case; short, name.ns, fqdn, each with and without :port
    routes: tuple[Route, ...]


@dataclass(frozen=True, slots=True)
class RouteConfiguration:
    name: str  # the port number as text, as istiod names outbound RDS
    virtual_hosts: tuple[VirtualHost, ...]


@dataclass(frozen=True, slots=True)
class Listener:
    name: str  # "0.0.0.0_<port>"
    port: int
    route_config: str


# --------------------------------------------------------------------------- services


@dataclass(frozen=True, slots=True)
class ServicePort:
    number: int
    protocol: str = "HTTP"
    name: str = ""
    target_port: int | None = None


@dataclass(frozen=True, slots=True)
class Service:
    """A registry entry (ServiceEntry host, Consul service, EDS-backed cluster)."""

    fqdn: str
    namespace: str
    ports: tuple[ServicePort, ...]
    resolution: Literal["STATIC", "DNS", "DNS_ROUND_ROBIN", "NONE"] = "STATIC"
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = "MESH_EXTERNAL"
    subject_alt_names: tuple[str, ...] = ()  # ServiceEntry subjectAltNames: who may serve it (ISTIO_MUTUAL)


@dataclass(frozen=True, slots=True)
class WorkloadIdentity:
    """Who is calling: decides sourceLabels/sourceNamespace/port matches and short names."""

    namespace: str = "default"
    labels: Labels = EMPTY_LABELS
    locality: Locality = Locality()
    name: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class MeshSnapshot:
    """One consistent configuration, swapped atomically as a whole."""

    version: str
    services: Mapping[str, Service] = field(default_factory=lambda: MappingProxyType({}))
    clusters: Mapping[str, Cluster] = field(default_factory=lambda: MappingProxyType({}))
    route_configs: Mapping[str, RouteConfiguration] = field(default_factory=lambda: MappingProxyType({}))
    listeners: Mapping[str, Listener] = field(default_factory=lambda: MappingProxyType({}))
    workload: WorkloadIdentity = WorkloadIdentity()
    security: SecurityPolicies = NO_SECURITY_POLICIES  # inbound: AuthorizationPolicies (security.istio.io)
    # A Sidecar's outboundTrafficPolicy.mode for this workload ("" = none: the mesh-wide setting applies)
    outbound_traffic_policy: str = ""
