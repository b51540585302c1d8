"""Consul state → snapshot → MeshState/explain: what Consul's own Envoy configuration would do (section B.3)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from meshlib.balancing.context import PickContext
from meshlib.config.model import LbKind
from meshlib.discovery.consul.compile import compile_consul
from meshlib.host_stats import HostStatsTable

from .consul_data import ask, build, health_entry, messages, state

HTTP: dict[str, Any] = {"Kind": "service-defaults", "Name": "web", "Protocol": "http"}
SUBSETS: dict[str, Any] = {"Kind": "service-resolver", "Name": "web", "Subsets": {
    "v1": {"Filter": "Service.Meta.version == v1"}, "v2": {"Filter": "Service.Meta.version == v2"}}}
WEB = [health_entry("web", "10.0.0.1", 8080, meta={"version": "v1"}),
       health_entry("web", "10.0.0.2", 8080, meta={"version": "v2"}),
       health_entry("web", "10.0.0.3", 9090, meta={"version": "v1"})]
ADMIN = [health_entry("admin", "10.0.1.1", 7000)]


def picks(mesh: Any, cluster: str, n: int = 200) -> Counter[str]:
    balancer = mesh.balancers[cluster]
    rng = random.Random(3)
    stats = HostStatsTable()
    out: Counter[str] = Counter()
    for _ in range(n):
        endpoint = balancer.pick(PickContext(rng, 0.0, stats))
        out[endpoint.key if endpoint is not None else "none"] += 1
    return out


def test_consul_defaults_not_istio_defaults() -> None:
    mesh, problems = build(state({"web": WEB}, HTTP))
    assert problems == []
    result = ask(mesh, "http://web/anything")
    assert result["route"] == {"virtual_service": "consul discovery-chain/web", "rule": "resolver:web.default.dc1",
                               "index": 0}
    assert result["timeout_s"] == 15.0  # Envoy's route timeout; Istio's default is none
    assert result["retries"] == {"attempts": 0, "per_try_timeout_s": None, "retry_on": ""}  # Istio: 2 retries
    assert result["lb"] == "ROUND_ROBIN"  # Istio: LEAST_REQUEST
    cluster = mesh.snapshot.clusters["outbound|80||web.service.consul"]
    assert sorted(f"{e.address}:{e.port}" for e in cluster.endpoints) == ["10.0.0.1:8080", "10.0.0.2:8080",
                                                                         "10.0.0.3:9090"]
    policy = cluster.policy
    assert policy.lb.panic_threshold_percent == 0.0
    assert policy.outlier_detection is not None  # on, with Envoy's defaults
    assert (policy.outlier_detection.consecutive_5xx, policy.outlier_detection.interval_s,
            policy.outlier_detection.base_ejection_time_s, policy.outlier_detection.max_ejection_percent) == (
        5, 10.0, 30.0, 10.0)
    pool = policy.connection_pool
    assert (pool.connect_timeout_s, pool.max_connections, pool.max_pending_requests, pool.max_requests,
            pool.max_retries) == (5.0, 1024, 1024, 1024, 3)


def test_hosts_short_fqdn_datacenter_and_instance_ports() -> None:
    mesh, _ = build(state({"web": WEB}, HTTP))
    for url in ("http://web/", "http://web.service.consul/", "http://web.service.dc1.consul/",
                "http://web.service.consul:8080/", "http://web:9090/", "http://WEB.service.consul:8080/"):
        assert ask(mesh, url)["destinations"][0]["cluster"] == "outbound|80||web.service.consul", url
    assert ask(mesh, "http://web.service.consul:7777/")["action"] == "passthrough"  # not a port of web
    assert sorted(p.number for p in mesh.snapshot.services["web.service.consul"].ports) == [80, 8080, 9090]


def test_tcp_chain_routes_without_l7_defaults() -> None:
    mesh, problems = build(state({"web": WEB}))  # no service-defaults: protocol tcp
    assert problems == []
    result = ask(mesh, "http://web/")
    assert (result["timeout_s"], result["retries"]["attempts"], result["route"]["rule"]) == (None, 0, "tcp")


def test_splitter_canary_weights_and_subset_filters() -> None:
    splitter = {"Kind": "service-splitter", "Name": "web", "Splits": [
        {"Weight": 90, "ServiceSubset": "v1"},
        {"Weight": 10, "ServiceSubset": "v2", "RequestHeaders": {"Set": {"x-canary": "1"}}}]}
    mesh, problems = build(state({"web": WEB}, HTTP, SUBSETS, splitter))
    assert problems == []
    result = ask(mesh, "http://web/")
    assert result["route"]["virtual_service"] == "consul service-splitter/web"
    assert [(d["subset"], d["weight"]) for d in result["destinations"]] == [("v1", 90.0), ("v2", 10.0)]
    assert result["endpoints"] == {"outbound|80|v1|web.service.consul": ["10.0.0.1:8080", "10.0.0.3:9090"],
                                   "outbound|80|v2|web.service.consul": ["10.0.0.2:8080"]}
    route = mesh.routes.route_configuration(80).virtual_hosts[0].routes[0]  # type: ignore[union-attr]
    assert [d.weight for d in route.destinations] == [9000, 1000]  # out of 10000, as Consul's weighted_clusters
    assert route.destinations[1].headers.request.set == (("x-canary", "1"),)


def test_router_header_route_path_rewrite_and_retries() -> None:
    router = {"Kind": "service-router", "Name": "web", "Routes": [
        {"Match": {"HTTP": {"PathPrefix": "/admin"}},
         "Destination": {"Service": "admin", "PrefixRewrite": "/", "RequestTimeout": "3s"}},
        {"Match": {"HTTP": {"Header": [{"Name": "x-debug", "Exact": "1"}], "Methods": ["GET", "POST"]}},
         "Destination": {"ServiceSubset": "v2", "NumRetries": 5, "RetryOnConnectFailure": True,
                         "RetryOnStatusCodes": [401, 409]}},
        {"Match": {"HTTP": {"Header": [{"Name": "x-beta", "Present": True, "Invert": True}],
                            "QueryParam": [{"Name": "v", "Exact": "1"}]}},
         "Destination": {"ServiceSubset": "v1", "RetryOn": ["5xx"]}},
    ]}
    admin_defaults = dict(HTTP, Name="admin")
    mesh, problems = build(state({"web": WEB, "admin": ADMIN}, HTTP, admin_defaults, SUBSETS, router))
    assert problems == []
    admin = ask(mesh, "http://web/admin/users")
    assert (admin["route"]["virtual_service"], admin["route"]["rule"]) == ("consul service-router/web", "Routes[0]")
    assert admin["destinations"][0]["cluster"] == "outbound|80||admin.service.consul"
    assert (admin["timeout_s"], admin["rewrite"]["uri"]) == (3.0, "/")
    debug = ask(mesh, "http://web/x", {"x-debug": "1"})
    assert debug["destinations"][0]["cluster"] == "outbound|80|v2|web.service.consul"
    assert debug["retries"] == {"attempts": 5, "per_try_timeout_s": None,
                                "retry_on": "connect-failure,retriable-status-codes,401,409"}
    assert debug["timeout_s"] == 15.0
    assert ask(mesh, "http://web/x", {"x-debug": "1"}, method="DELETE")["route"]["rule"] == "default"
    query = ask(mesh, "http://web/x?v=1")
    assert (query["route"]["rule"], query["retries"]["attempts"]) == ("Routes[2]", 1)  # Envoy's num_retries default
    assert ask(mesh, "http://web/x?v=1", {"x-beta": "y"})["route"]["rule"] == "default"  # inverted header
    catch_all = ask(mesh, "http://web/other")
    assert (catch_all["route"]["rule"], catch_all["destinations"][0]["cluster"]) == (
        "default", "outbound|80||web.service.consul")


def test_failover_to_another_subset_is_a_lower_priority_level() -> None:
    resolver = dict(SUBSETS, DefaultSubset="v1", Failover={"v1": {"ServiceSubset": "v2"}})
    mesh, problems = build(state({"web": WEB}, HTTP, resolver))
    assert problems == []
    cluster = mesh.snapshot.clusters["outbound|80|v1|web.service.consul"]
    assert sorted((e.address, e.priority) for e in cluster.endpoints) == [
        ("10.0.0.1", 0), ("10.0.0.2", 1), ("10.0.0.3", 0)]
    assert set(picks(mesh, cluster.name)) == {"10.0.0.1:8080", "10.0.0.3:9090"}
    down = [health_entry("web", "10.0.0.1", 8080, meta={"version": "v1"}, checks=("critical",)),
            WEB[1],
            health_entry("web", "10.0.0.3", 9090, meta={"version": "v1"}, node_checks=("critical",))]
    mesh, _ = build(state({"web": down}, HTTP, resolver))
    assert set(picks(mesh, "outbound|80|v1|web.service.consul")) == {"10.0.0.2:8080"}


def test_cross_datacenter_failover_uses_remote_instances() -> None:
    resolver = {"Kind": "service-resolver", "Name": "web", "Failover": {"*": {"Datacenters": ["dc2", "dc3"]}}}
    remote = {"dc2": {"web": [health_entry("web", "10.2.0.1", 8080, node_address="10.2.0.1")]}}
    mesh, problems = build(state({"web": WEB[:1]}, HTTP, resolver, remote=remote))
    assert problems == []
    cluster = mesh.snapshot.clusters["outbound|80||web.service.consul"]
    assert [(e.address, e.priority) for e in cluster.endpoints] == [("10.0.0.1", 0), ("10.2.0.1", 1)]


def test_maintenance_drains_an_instance() -> None:
    maint = {"CheckID": "_service_maintenance:web-a", "Status": "critical", "ServiceID": "web-a"}
    entries = [health_entry("web", "10.0.0.1", 8080, instance_id="web-a", extra_checks=(maint,)), WEB[1]]
    mesh, _ = build(state({"web": entries}, HTTP))
    assert ask(mesh, "http://web/")["endpoints"] == {"outbound|80||web.service.consul": ["10.0.0.2:8080"]}


def test_caller_upstream_config_and_load_balancer() -> None:
    caller = {"Kind": "service-defaults", "Name": "frontend", "UpstreamConfig": {
        "Defaults": {"ConnectTimeoutMs": 1500, "Limits": {"MaxConnections": 10, "MaxConcurrentRequests": 20}},
        "Overrides": [{"Name": "web", "PassiveHealthCheck": {"Interval": "2s", "MaxFailures": 3,
                                                             "EnforcingConsecutive5xx": 50, "MaxEjectionPercent": 40,
                                                             "BaseEjectionTime": "7s"}}]}}
    resolver = {"Kind": "service-resolver", "Name": "web", "ConnectTimeout": "2s", "LoadBalancer": {
        "Policy": "ring_hash", "RingHashConfig": {"MinimumRingSize": 64},
        "HashPolicies": [{"Field": "header", "FieldValue": "X-User"}, {"SourceIP": True, "Terminal": True}]}}
    mesh, problems = build(state({"web": WEB}, HTTP, caller, resolver), caller="frontend")
    assert problems == []
    policy = mesh.snapshot.clusters["outbound|80||web.service.consul"].policy
    assert (policy.connection_pool.connect_timeout_s, policy.connection_pool.max_connections,
            policy.connection_pool.max_pending_requests, policy.connection_pool.max_requests) == (1.5, 10, 1024, 20)
    od = policy.outlier_detection
    assert od is not None
    assert (od.interval_s, od.consecutive_5xx, od.enforcing_consecutive_5xx, od.max_ejection_percent,
            od.base_ejection_time_s) == (2.0, 3, 50.0, 40.0, 7.0)
    assert (policy.lb.kind, policy.lb.ring_min_size) == (LbKind.RING_HASH, 64)
    assert [(h.kind, h.name, h.terminal) for h in policy.lb.hash_policies] == [
        ("header", "x-user", False), ("source_ip", "", True)]
    # Without the caller's service-defaults: the resolver's ConnectTimeout and Envoy's limits.
    plain, _ = build(state({"web": WEB}, HTTP, caller, resolver))
    pool = plain.snapshot.clusters["outbound|80||web.service.consul"].policy.connection_pool
    assert (pool.connect_timeout_s, pool.max_connections) == (2.0, 1024)


def test_invalid_entries_are_dropped_and_the_rest_keeps_working() -> None:
    bad_router = {"Kind": "service-router", "Name": "web", "Routes": [
        {"Match": {"HTTP": {"PathPrefix": "/x"}}, "Destination": {"ServiceSubset": "v9"}}]}
    bad_splitter = {"Kind": "service-splitter", "Name": "admin", "Splits": [{"Weight": 100}]}  # admin is tcp
    loop_a = {"Kind": "service-resolver", "Name": "a", "Redirect": {"Service": "b"}}
    loop_b = {"Kind": "service-resolver", "Name": "b", "Redirect": {"Service": "a"}}
    bad_filter = {"Kind": "service-resolver", "Name": "admin", "Subsets": {"x": {"Filter": "Service.Port =="}}}
    mesh, problems = build(state({"web": WEB, "admin": ADMIN}, HTTP, SUBSETS, bad_router, bad_splitter,
                                 loop_a, loop_b, bad_filter))
    assert sorted(messages(problems)) == sorted([
        'consul service-resolver/admin: Subsets["x"].Filter: Filter for subset \'x\' is not a valid expression: '
        "expected a value at position 15",
        'consul service-router/web: Routes[0].Destination: service "web" does not have a subset named "v9"',
        'consul service-resolver/a: Redirect: detected circular resolver redirect: '
        "[a.default.dc1 -> b.default.dc1 -> a.default.dc1]",
        'consul service-splitter/admin: Protocol: discovery chain "admin" uses a protocol "tcp" that does not permit '
        "advanced routing or splitting behavior",
    ])
    assert ask(mesh, "http://web/x")["route"]["virtual_service"] == "consul service-resolver/web"  # router dropped
    assert ask(mesh, "http://admin/")["endpoints"] == {"outbound|80||admin.service.consul": ["10.0.1.1:7000"]}


def test_inconsistent_protocols_blame_the_referencing_entry() -> None:
    splitter = {"Kind": "service-splitter", "Name": "web", "Splits": [{"Weight": 50}, {"Weight": 50,
                                                                                       "Service": "admin"}]}
    _, problems = build(state({"web": WEB, "admin": ADMIN}, HTTP, splitter))
    assert messages(problems) == [
        'consul service-splitter/web: Splits[1]: discovery chain "web" uses inconsistent protocols; '
        'service "admin" has "tcp" which is not "http"']


def test_version_is_deterministic_and_tracks_changes() -> None:
    one = state({"web": WEB}, HTTP)
    same = state({"web": [dict(e) for e in WEB]}, dict(HTTP))
    other = state({"web": WEB[:2]}, HTTP)
    v1 = compile_consul(one, build(one)[0].snapshot.workload)[0].version
    assert v1 == one.version() == compile_consul(same, build(same)[0].snapshot.workload)[0].version
    assert v1 != other.version()


def test_recompiles_reuse_unchanged_lists_but_see_every_change() -> None:
    from meshlib.config.model import WorkloadIdentity
    from meshlib.discovery.consul.state import ConsulState

    web = list(WEB)
    entries: dict[str, list[dict[str, Any]]] = {"service-defaults": [HTTP], "service-resolver": [SUBSETS]}
    first = ConsulState("dc1", {"web": web, "admin": list(ADMIN)}, entries)
    snap1, _ = compile_consul(first, WorkloadIdentity())
    # One instance goes critical: a new list for "web" only, the same config-entry lists.
    flipped = [health_entry("web", "10.0.0.1", 8080, meta={"version": "v1"}, checks=("critical",)), *web[1:]]
    second = ConsulState("dc1", {"web": flipped, "admin": first.services["admin"]}, entries)
    snap2, _ = compile_consul(second, WorkloadIdentity())
    assert snap1.version != snap2.version
    assert sorted(e.address for e in snap2.clusters["outbound|80||web.service.consul"].endpoints) == [
        "10.0.0.2", "10.0.0.3"]
    # A new config-entry list is seen too.
    splitter = {"Kind": "service-splitter", "Name": "web", "Splits": [{"Weight": 100, "ServiceSubset": "v2"}]}
    third = ConsulState("dc1", second.services, {**entries, "service-splitter": [splitter]})
    snap3, problems = compile_consul(third, WorkloadIdentity())
    assert problems == []
    vhost = next(v for v in snap3.route_configs["80"].virtual_hosts if v.name == "web.service.consul:80")
    route = vhost.routes[0]
    assert route.destinations[0].cluster == "outbound|80|v2|web.service.consul"
    assert compile_consul(second, WorkloadIdentity())[0].version == snap2.version
