"""Compilation into MeshSnapshot: services, clusters, policies, virtual hosts, workload pruning."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlib.config import compile_snapshot, config_file_set, load_snapshot, read_resources, validate_paths
from meshlib.config.model import (
    UINT32_MAX,
    ConnectionPool,
    Endpoint,
    HashPolicy,
    Labels,
    LbKind,
    Listener,
    Locality,
    Warmup,
    WorkloadIdentity,
)

from .helpers import snapshot, write

REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"


def test_services_clusters_and_endpoint_ports(tmp_path: Path) -> None:
    snap = snapshot(
        tmp_path,
        """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: details, namespace: prod}
spec:
  hosts: [details]
  location: MESH_INTERNAL
  ports:
  - {number: 9080, name: http, targetPort: 8080}
  - {number: 9443, name: grpc, protocol: GRPC}
  resolution: STATIC
  endpoints:
  - {address: 10.9.0.1, ports: {grpc: 7443}, locality: us-east1/b, weight: 3}
  - {address: 10.9.0.2}
""",
        services=False,
    )
    service = snap.services["details.prod.svc.cluster.local"]
    assert service.namespace == "prod"
    assert service.location == "MESH_INTERNAL"
    assert [p.number for p in service.ports] == [9080, 9443]
    http = snap.clusters["outbound|9080||details.prod.svc.cluster.local"]
    grpc = snap.clusters["outbound|9443||details.prod.svc.cluster.local"]
    assert [(e.address, e.port) for e in http.endpoints] == [("10.9.0.1", 8080), ("10.9.0.2", 8080)]
    assert [(e.address, e.port) for e in grpc.endpoints] == [("10.9.0.1", 7443), ("10.9.0.2", 9443)]
    assert http.endpoints[0].locality == Locality("us-east1", "b")
    assert http.endpoints[0].weight == 3
    assert http.service == "details.prod.svc.cluster.local"
    assert http.subset == ""
    assert http.resolution == "STATIC"


def test_dns_and_none_resolution(tmp_path: Path) -> None:
    snap = snapshot(
        tmp_path,
        """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}, {number: 80, name: http}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: any}
spec:
  hosts: ["*.internal.example"]
  ports: [{number: 80, name: http}]
  resolution: NONE
""",
        services=False,
    )
    dns = snap.clusters["outbound|443||api.example.com"]
    assert dns.endpoints == (Endpoint("api.example.com", 443),)
    assert dns.resolution == "DNS"
    passthrough = snap.clusters["outbound|80||*.internal.example"]
    assert passthrough.endpoints == ()
    assert passthrough.resolution == "NONE"
    # TLS ports get a cluster but no HTTP route configuration.
    assert "443" not in snap.route_configs
    vhosts = {v.name: v for v in snap.route_configs["80"].virtual_hosts}
    assert vhosts["api.example.com:80"].domains == ("api.example.com", "api.example.com:80")
    assert vhosts["*.internal.example:80"].domains == ("*.internal.example", "*.internal.example:80")


def test_subset_clusters_filter_endpoints_by_labels(tmp_path: Path) -> None:
    snap = snapshot(
        tmp_path,
        """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2, app: reviews}}
  - {name: none, labels: {version: v9}}
  - {name: all}
""",
    )

    def addresses(subset: str) -> list[str]:
        return [e.address for e in snap.clusters[f"outbound|9080|{subset}|{REVIEWS}"].endpoints]

    assert addresses("") == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert addresses("v1") == ["10.0.0.1"]
    assert addresses("v2") == ["10.0.0.2"]
    assert addresses("none") == []
    assert addresses("all") == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert snap.clusters[f"outbound|9080|v1|{REVIEWS}"].subset == "v1"
    assert f"outbound|9080|v1|{RATINGS}" not in snap.clusters


POLICY_DR = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: multi}
spec:
  hosts: [multi]
  ports: [{number: 80, name: http}, {number: 81, name: http-alt}]
  resolution: STATIC
  endpoints: [{address: 10.1.0.1, labels: {v: "1"}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: multi}
spec:
  host: multi
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 2s}
      http: {http1MaxPendingRequests: 10, http2MaxRequests: 0, maxRequestsPerConnection: 1, idleTimeout: 30s}
    portLevelSettings:
    - port: {number: 81}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: s1
    labels: {v: "1"}
    trafficPolicy:
      connectionPool:
        http: {maxRetries: 7}
  - name: s2
    labels: {v: "1"}
    trafficPolicy:
      outlierDetection: {consecutiveGatewayErrors: 3}
      portLevelSettings:
      - port: {number: 80}
        tls: {mode: SIMPLE}
"""


def test_policy_merge_order_top_port_subset(tmp_path: Path) -> None:
    snap = snapshot(tmp_path, POLICY_DR, services=False)
    fqdn = "multi.default.svc.cluster.local"

    def policy(port: int, subset: str = "") -> object:
        return snap.clusters[f"outbound|{port}|{subset}|{fqdn}"].policy

    top80 = snap.clusters[f"outbound|80||{fqdn}"].policy
    assert top80.lb.kind == LbKind.ROUND_ROBIN
    assert top80.connection_pool == ConnectionPool(
        max_connections=100,
        connect_timeout_s=2.0,
        max_pending_requests=10,
        max_requests=UINT32_MAX,
        max_requests_per_connection=1,
        idle_timeout_s=30.0,
    )
    # Port-level settings replace the top-level policy wholesale (Istio: no inheritance).
    top81 = snap.clusters[f"outbound|81||{fqdn}"].policy
    assert top81.lb.kind == LbKind.RANDOM
    assert top81.connection_pool == ConnectionPool()
    # A subset overrides only the components it sets.
    s1_80 = snap.clusters[f"outbound|80|s1|{fqdn}"].policy
    assert s1_80.lb.kind == LbKind.ROUND_ROBIN
    assert s1_80.connection_pool == ConnectionPool(max_retries=7)
    s1_81 = snap.clusters[f"outbound|81|s1|{fqdn}"].policy
    assert s1_81.lb.kind == LbKind.RANDOM
    assert s1_81.connection_pool.max_retries == 7
    # The subset's own port-level settings replace all four components for that port.
    s2_80 = snap.clusters[f"outbound|80|s2|{fqdn}"].policy
    assert s2_80.tls_mode == "SIMPLE"
    assert s2_80.outlier_detection is None
    assert s2_80.lb.kind == LbKind.LEAST_REQUEST
    assert s2_80.connection_pool == ConnectionPool()
    s2_81 = snap.clusters[f"outbound|81|s2|{fqdn}"].policy
    assert s2_81.lb.kind == LbKind.RANDOM
    assert s2_81.outlier_detection is not None
    assert s2_81.outlier_detection.enforcing_consecutive_gateway_failure == 100.0
    assert policy(80) is not None


def test_outlier_detection_mapping(tmp_path: Path) -> None:
    snap = snapshot(
        tmp_path,
        """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {}
  subsets:
  - name: zero
    labels: {version: v1}
    trafficPolicy:
      outlierDetection:
        consecutive5xxErrors: 0
        consecutiveGatewayErrors: 0
        interval: 5s
        baseEjectionTime: 10m
        maxEjectionPercent: 50
        minHealthPercent: 30
  - name: split
    labels: {version: v2}
    trafficPolicy:
      outlierDetection: {splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
""",
    )
    plain = snap.clusters[f"outbound|9080||{REVIEWS}"].policy
    assert plain.outlier_detection is not None
    assert plain.outlier_detection.consecutive_5xx == 5
    assert plain.outlier_detection.enforcing_consecutive_5xx == 100
    assert plain.outlier_detection.enforcing_consecutive_gateway_failure == 0
    assert plain.outlier_detection.enforcing_success_rate == 0
    assert plain.lb.panic_threshold_percent == 0
    assert plain.lb.failover_enabled is True
    zero = snap.clusters[f"outbound|9080|zero|{REVIEWS}"].policy
    detection = zero.outlier_detection
    assert detection is not None
    assert (detection.consecutive_5xx, detection.enforcing_consecutive_5xx) == (0, 0)
    assert (detection.consecutive_gateway_failure, detection.enforcing_consecutive_gateway_failure) == (0, 0)
    assert detection.interval_s == 5
    assert detection.base_ejection_time_s == 600
    assert detection.max_ejection_time_s == 600  # Envoy raises the max to the base time
    assert detection.max_ejection_percent == 50
    assert zero.lb.panic_threshold_percent == 30
    split = snap.clusters[f"outbound|9080|split|{REVIEWS}"].policy.outlier_detection
    assert split is not None
    assert split.split_external_local_origin_errors
    assert split.consecutive_local_origin_failure == 2
    ratings = snap.clusters[f"outbound|9080||{RATINGS}"].policy
    assert ratings.outlier_detection is None
    assert ratings.lb.panic_threshold_percent == 50
    assert ratings.lb.failover_enabled is False


def test_load_balancer_mapping(tmp_path: Path) -> None:
    snap = snapshot(
        tmp_path,
        """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  annotations: {meshlib.io/load-balancer: PEAK_EWMA}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: LEAST_CONN
      warmup: {duration: 30s, minimumPercent: 20, aggression: 2}
      localityLbSetting:
        enabled: true
        failover: [{from: us-east, to: us-west}]
        failoverPriority: [example.com/rack]
  subsets:
  - name: cookie
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        consistentHash:
          httpCookie: {name: session, path: /, ttl: 1h}
          ringHash: {minimumRingSize: 2048}
  - name: maglev
    labels: {version: v2}
    trafficPolicy:
      loadBalancer:
        consistentHash: {useSourceIp: true, maglev: {tableSize: 131071}}
  - name: legacy
    labels: {version: v3}
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
        warmupDurationSecs: 15s
  - name: query
    labels: {version: v3}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpQueryParameterName: user, minimumRingSize: 4096}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute: [{from: "us-east/*", to: {"us-east/*": 80, "us-west/*": 20}}]
""",
    )
    top = snap.clusters[f"outbound|9080||{REVIEWS}"].policy.lb
    assert top.kind == LbKind.PEAK_EWMA  # annotation overrides simple
    assert top.warmup == Warmup(30.0, 20.0, 2.0)
    assert top.locality is not None
    assert top.locality.failover[0].from_ == "us-east"
    # Istio refuses a topology label in failoverPriority together with failover.
    assert top.locality.failover_priority == ("example.com/rack",)
    cookie = snap.clusters[f"outbound|9080|cookie|{REVIEWS}"].policy.lb
    assert cookie.kind == LbKind.RING_HASH
    assert cookie.ring_min_size == 2048
    assert cookie.hash_policies == (HashPolicy("cookie", "session", cookie_ttl_s=3600.0, cookie_path="/"),)
    maglev = snap.clusters[f"outbound|9080|maglev|{REVIEWS}"].policy.lb
    assert maglev.kind == LbKind.MAGLEV
    assert maglev.maglev_table_size == 131071
    assert maglev.hash_policies == (HashPolicy("source_ip"),)
    legacy = snap.clusters[f"outbound|9080|legacy|{REVIEWS}"].policy.lb
    assert legacy.kind == LbKind.PEAK_EWMA
    assert legacy.warmup == Warmup(15.0)
    query = snap.clusters[f"outbound|9080|query|{REVIEWS}"].policy.lb
    assert query.ring_min_size == 4096
    assert query.hash_policies == (HashPolicy("query_parameter", "user"),)
    ratings = snap.clusters[f"outbound|9080||{RATINGS}"].policy.lb
    assert ratings.kind == LbKind.LEAST_REQUEST
    assert ratings.locality is not None
    assert dict(ratings.locality.distribute[0].to) == {
        "us-east/*": 80,
        "us-west/*": 20,
    }


def test_domains_and_default_routes(tmp_path: Path) -> None:
    snap = snapshot(
        tmp_path,
        """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: details, namespace: prod}
spec:
  hosts: [details]
  ports: [{number: 9080, name: http}]
  resolution: DNS
""",
    )
    assert snap.listeners == {"0.0.0.0_9080": Listener("0.0.0.0_9080", 9080, "9080")}
    config = snap.route_configs["9080"]
    assert config.name == "9080"
    vhosts = {v.name: v for v in config.virtual_hosts}
    assert set(vhosts) == {f"{REVIEWS}:9080", f"{RATINGS}:9080", "details.prod.svc.cluster.local:9080"}
    assert vhosts[f"{REVIEWS}:9080"].domains == (
        "reviews",
        "reviews:9080",
        "reviews.default",
        "reviews.default:9080",
        "reviews.default.svc",
        "reviews.default.svc:9080",
        REVIEWS,
        f"{REVIEWS}:9080",
    )
    assert vhosts["details.prod.svc.cluster.local:9080"].domains == (
        "details.prod",
        "details.prod:9080",
        "details.prod.svc",
        "details.prod.svc:9080",
        "details.prod.svc.cluster.local",
        "details.prod.svc.cluster.local:9080",
    )
    (route,) = vhosts[f"{REVIEWS}:9080"].routes
    assert route.matches == ()
    assert route.timeout_s is None
    assert route.source.virtual_service is None
    assert route.source.rule_name == "default"
    assert [d.cluster for d in route.destinations] == [f"outbound|9080||{REVIEWS}"]
    assert route.retry is not None
    assert route.retry.num_retries == 2
    assert route.retry.previous_hosts


def test_workload_namespace_changes_short_domains(tmp_path: Path) -> None:
    snap = snapshot(tmp_path, "", workload=WorkloadIdentity(namespace="prod"))
    vhost = snap.route_configs["9080"].virtual_hosts[0]
    assert "reviews" not in vhost.domains
    assert "reviews.default" in vhost.domains


def vs(body: str, name: str = "reviews", namespace: str = "default") -> str:
    return (
        f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, "
        f"namespace: {namespace}}}\nspec:\n" + body
    )


def reviews_routes(snap: object, port: int = 9080) -> list[str]:
    from meshlib.config.model import MeshSnapshot

    assert isinstance(snap, MeshSnapshot)
    vhost = next(v for v in snap.route_configs[str(port)].virtual_hosts if v.name == f"{REVIEWS}:{port}")
    return [f"{r.source.virtual_service}#{r.source.rule_name}" for r in vhost.routes]


def test_gateway_only_virtual_services_do_not_apply(tmp_path: Path) -> None:
    text = vs(
        """
  hosts: [reviews]
  gateways: [istio-system/ingress]
  http:
  - {name: gw, route: [{destination: {host: ratings}}]}
---
""",
        name="gw",
    ) + vs(
        """
  hosts: [reviews]
  gateways: [mesh, istio-system/ingress]
  http:
  - name: gw-only
    match: [{gateways: [istio-system/ingress], uri: {prefix: /x}}]
    route: [{destination: {host: ratings}}]
  - name: both
    route: [{destination: {host: reviews}}]
""",
        name="mesh",
    )
    snap = snapshot(tmp_path, text)
    assert reviews_routes(snap) == ["default/mesh#both"]


def test_source_labels_namespace_and_port_pruning(tmp_path: Path) -> None:
    text = vs("""
  hosts: [reviews]
  http:
  - name: from-productpage
    match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: reviews}}]
  - name: from-prod
    match: [{sourceNamespace: prod}]
    route: [{destination: {host: reviews}}]
  - name: mixed
    match: [{sourceLabels: {app: other}}, {uri: {prefix: /api}, port: 9080}]
    route: [{destination: {host: reviews}}]
  - name: other-port
    match: [{port: 8080}]
    route: [{destination: {host: reviews}}]
  - name: catch-all
    route: [{destination: {host: reviews}}]
""")
    productpage = WorkloadIdentity(
        namespace="default", labels=Labels({"app": "productpage", "version": "v1"})
    )
    snap = snapshot(tmp_path, text, workload=productpage)
    assert reviews_routes(snap) == [
        "default/reviews#from-productpage",
        "default/reviews#mixed",
        "default/reviews#catch-all",
    ]
    vhost = next(v for v in snap.route_configs["9080"].virtual_hosts if v.name == f"{REVIEWS}:9080")
    (kept,) = vhost.routes[1].matches  # the sourceLabels block that cannot match was dropped
    assert kept.port == 9080
    assert kept.uri is not None
    other = snapshot(tmp_path, text, workload=WorkloadIdentity(namespace="prod"))
    assert reviews_routes(other) == [
        "default/reviews#from-prod",
        "default/reviews#mixed",
        "default/reviews#catch-all",
    ]


def test_first_virtual_service_wins_and_exact_beats_wildcard(tmp_path: Path) -> None:
    text = (
        vs(
            """
  hosts: ["*.svc.cluster.local"]
  http: [{name: wild, route: [{destination: {host: ratings}}]}]
---
""",
            name="wild",
        )
        + vs(
            """
  hosts: [reviews]
  http: [{name: first, route: [{destination: {host: reviews}}]}]
---
""",
            name="first",
        )
        + vs(
            """
  hosts: [reviews.default.svc.cluster.local]
  http: [{name: second, route: [{destination: {host: ratings}}]}]
""",
            name="second",
        )
    )
    snap = snapshot(tmp_path, text)
    assert reviews_routes(snap) == ["default/first#first"]
    ratings = next(v for v in snap.route_configs["9080"].virtual_hosts if v.name == f"{RATINGS}:9080")
    assert [r.source.rule_name for r in ratings.routes] == ["wild"]


def test_destination_port_defaults(tmp_path: Path) -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: multi}
spec:
  hosts: [multi]
  ports: [{number: 80, name: http}, {number: 8080, name: http-alt}]
  resolution: DNS
---
""" + vs(
        """
  hosts: [multi]
  http:
  - route:
    - {destination: {host: multi}, weight: 50}
    - {destination: {host: ratings}, weight: 50}
""",
        name="multi",
    )
    snap = snapshot(tmp_path, text)
    for port in (80, 8080):
        vhost = next(v for v in snap.route_configs[str(port)].virtual_hosts if v.name.startswith("multi."))
        (route,) = vhost.routes
        # Several ports: the listener port; a single-port service: its only port.
        assert [(d.cluster.split("|")[1], d.port) for d in route.destinations] == [
            (str(port), port),
            ("9080", 9080),
        ]


def test_virtual_service_host_without_service_gets_port_80(tmp_path: Path) -> None:
    snap = snapshot(
        tmp_path,
        vs("""
  hosts: [bookinfo.example.com]
  http: [{route: [{destination: {host: reviews}}]}]
"""),
    )
    (vhost,) = snap.route_configs["80"].virtual_hosts
    assert vhost.name == "bookinfo.example.com:80"
    assert vhost.domains == ("bookinfo.example.com", "bookinfo.example.com:80")
    assert vhost.routes[0].destinations[0].cluster == f"outbound|9080||{REVIEWS}"
    assert snap.listeners["0.0.0.0_80"].route_config == "80"


def test_delegate_one_level(tmp_path: Path) -> None:
    text = vs("""
  hosts: [reviews]
  http:
  - name: api
    match: [{uri: {prefix: /api}, headers: {x-a: {exact: "1"}}}]
    timeout: 3s
    delegate: {name: api-routes, namespace: team}
  - name: rest
    route: [{destination: {host: reviews}}]
---
""") + vs(
        """
  http:
  - name: v2
    match: [{uri: {prefix: /api/v2}, headers: {x-b: {exact: "2"}}}]
    route: [{destination: {host: ratings.default}}]
    timeout: 1s
  - name: any
    route: [{destination: {host: reviews.default}}]
""",
        name="api-routes",
        namespace="team",
    )
    snap = snapshot(tmp_path, text)
    assert reviews_routes(snap) == ["team/api-routes#v2", "team/api-routes#any", "default/reviews#rest"]
    vhost = next(v for v in snap.route_configs["9080"].virtual_hosts if v.name == f"{REVIEWS}:9080")
    v2, any_route = vhost.routes[0], vhost.routes[1]
    (match,) = v2.matches
    assert match.uri is not None
    assert match.uri.value == "/api/v2"
    assert [name for name, _ in match.headers] == ["x-a", "x-b"]
    assert v2.timeout_s == 1.0
    assert any_route.timeout_s == 3.0
    assert any_route.matches[0].uri is not None
    assert any_route.matches[0].uri.value == "/api"
    assert v2.destinations[0].host == RATINGS  # resolved in the delegate's namespace via name.namespace


def test_consistent_hash_destination_drops_previous_hosts(tmp_path: Path) -> None:
    snap = snapshot(
        tmp_path,
        """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
""",
    )
    vhost = next(v for v in snap.route_configs["9080"].virtual_hosts if v.name == f"{REVIEWS}:9080")
    assert vhost.routes[0].retry is not None
    assert vhost.routes[0].retry.previous_hosts is False


def test_multiple_destination_rules_merge_subsets(tmp_path: Path) -> None:
    snap = snapshot(
        tmp_path,
        """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets: [{name: v1, labels: {version: v3}}, {name: v2, labels: {version: v2}}]
""",
    )
    assert snap.clusters[f"outbound|9080||{REVIEWS}"].policy.lb.kind == LbKind.RANDOM
    assert [e.address for e in snap.clusters[f"outbound|9080|v1|{REVIEWS}"].endpoints] == ["10.0.0.1"]
    assert [e.address for e in snap.clusters[f"outbound|9080|v2|{REVIEWS}"].endpoints] == ["10.0.0.2"]


def test_workload_selector_on_destination_rule(tmp_path: Path) -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  workloadSelector: {matchLabels: {app: productpage}}
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
"""
    chosen = snapshot(tmp_path, text, workload=WorkloadIdentity(labels=Labels({"app": "productpage"})))
    assert chosen.clusters[f"outbound|9080||{REVIEWS}"].policy.lb.kind == LbKind.RANDOM
    other = snapshot(tmp_path, text)
    assert other.clusters[f"outbound|9080||{REVIEWS}"].policy.lb.kind == LbKind.LEAST_REQUEST


def test_wildcard_destination_rule_applies(tmp_path: Path) -> None:
    snap = snapshot(
        tmp_path,
        """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all}
spec:
  host: "*.default.svc.cluster.local"
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
""",
    )
    assert snap.clusters[f"outbound|9080||{RATINGS}"].policy.lb.kind == LbKind.RANDOM


def test_host_check_can_be_disabled(tmp_path: Path) -> None:
    write(
        tmp_path,
        "mesh/vs.yaml",
        vs("  hosts: [reviews]\n  http: [{route: [{destination: {host: details}}]}]\n"),
    )
    (warning,) = validate_paths([tmp_path / "mesh"])
    assert warning.is_warning and warning.code == "IST0101"
    assert warning.message.startswith('host "details.default.svc.cluster.local"')
    snap = load_snapshot([tmp_path / "mesh"], check_hosts=False)
    vhost = snap.route_configs["80"].virtual_hosts[0]
    assert vhost.routes[0].destinations[0].cluster == "outbound|80||details.default.svc.cluster.local"
    resources, problems = read_resources([tmp_path / "mesh"])
    assert problems == []
    assert compile_snapshot(resources, check_hosts=False, version="v7").version == "v7"


def test_files_directories_and_skipped_documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path,
        "mesh/b/z.yml",
        """
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
data: {x: "1"}
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: ingress}
spec: {selector: {istio: ingressgateway}}
""",
    )
    write(
        tmp_path,
        "mesh/a.yaml",
        "apiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\n"
        "metadata: {name: x}\nspec: {hosts: [x], ports: [{number: 80, name: http}], resolution: DNS}\n",
    )
    write(tmp_path, "mesh/notes.txt", "not yaml: [")
    write(tmp_path, "mesh/.hidden/x.yaml", "not yaml: [")
    write(tmp_path, "mesh/.swap.yaml", "not yaml: [")
    write(tmp_path, "single.yaml", "")
    monkeypatch.chdir(tmp_path)
    assert config_file_set(["mesh", "single.yaml", "mesh/a.yaml", "missing"]) == [
        Path("mesh/a.yaml"),
        Path("mesh/b/z.yml"),
        Path("single.yaml"),
    ]
    assert validate_paths(["mesh"]) == []
    snap = load_snapshot(["mesh", "single.yaml"], version="abc")
    assert snap.version == "abc"
    assert list(snap.services) == ["x.default.svc.cluster.local"]
    assert [str(p) for p in validate_paths(["missing"])] == ["missing: no such file or directory"]


def test_problems_from_many_files_are_all_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path,
        "mesh/one.yaml",
        vs("  hosts: [reviews]\n  http: [{route: [{destination: {host: r}, weight: -1}]}]\n"),
    )
    write(tmp_path, "mesh/two.yaml", "a: [\n")
    monkeypatch.chdir(tmp_path)
    messages = [str(p) for p in validate_paths(["mesh/"]) if not p.is_warning]
    assert messages == [
        "mesh/one.yaml:6: VirtualService default/reviews: spec.http[0].route[0].weight: "
        "must be at least 0",
        "mesh/two.yaml:2: YAML syntax error: did not find expected node content",
    ]


def test_ten_thousand_endpoints_compile_fast(tmp_path: Path) -> None:
    lines = [
        "apiVersion: networking.istio.io/v1",
        "kind: ServiceEntry",
        "metadata: {name: big}",
        "spec:",
        "  hosts: [big]",
        "  ports: [{number: 80, name: http}]",
        "  resolution: STATIC",
        "  endpoints:",
    ]
    lines += [
        f"  - {{address: 10.{i // 65536}.{i // 256 % 256}.{i % 256}, labels: {{v: v{i % 2}}}}}"
        for i in range(10_000)
    ]
    lines += [
        "---",
        "apiVersion: networking.istio.io/v1",
        "kind: DestinationRule",
        "metadata: {name: big}",
        "spec:",
        "  host: big",
        "  subsets: [{name: a, labels: {v: v0}}, {name: b, labels: {v: v1}}]",
    ]
    write(tmp_path, "big.yaml", "\n".join(lines) + "\n")
    resources, problems = read_resources([tmp_path / "big.yaml"])
    assert problems == []
    snap = compile_snapshot(resources)  # its speed is measured in bench/snapshot_build.py, not here
    assert len(snap.clusters["outbound|80||big.default.svc.cluster.local"].endpoints) == 10_000
    assert len(snap.clusters["outbound|80|a|big.default.svc.cluster.local"].endpoints) == 5_000
