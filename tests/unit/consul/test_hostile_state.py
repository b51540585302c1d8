"""Arbitrary JSON where Consul's answers should be: problems, never an exception."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlib.config.model import WorkloadIdentity
from meshlib.discovery.consul.compile import compile_consul
from meshlib.discovery.consul.entry_types import CONFIG_KINDS
from meshlib.discovery.consul.state import ConsulState

_scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=12)
_KEYS = ["Name", "Kind", "Routes", "Splits", "Weight", "Service", "ServiceSubset", "Subsets", "Filter", "Redirect",
         "Failover", "Datacenters", "Targets", "DefaultSubset", "Match", "HTTP", "PathPrefix", "PathExact", "Header",
         "Destination", "Protocol", "Config", "protocol", "LoadBalancer", "Policy", "HashPolicies", "ConnectTimeout",
         "RequestTimeout", "UpstreamConfig", "Defaults", "Limits", "PassiveHealthCheck", "Node", "Address", "Port",
         "Checks", "Status", "Weights", "Passing", "Warning", "Meta", "Tags", "TaggedAddresses", "Locality", "web",
         "v1", "*", "Methods", "QueryParam", "NumRetries", "RetryOn"]
_json: st.SearchStrategy[Any] = st.recursive(
    _scalars | st.sampled_from(["web", "v1", "http", "tcp", "10.0.0.1", "1s", "Service.Meta.v == 1", "/"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=6),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    services=st.dictionaries(st.sampled_from(["web", "api", "db"]), st.lists(_json, max_size=3) | _json, max_size=3),
    entries=st.dictionaries(st.sampled_from(CONFIG_KINDS), st.lists(_json, max_size=3) | _json, max_size=5),
)
def test_compile_never_raises(services: dict[str, Any], entries: dict[str, Any]) -> None:
    snapshot, problems = compile_consul(ConsulState("dc1", services, entries), WorkloadIdentity())
    assert snapshot.version.startswith("consul-")
    assert all(str(p) for p in problems)


@settings(max_examples=100, deadline=None)
@given(splits=st.lists(st.fixed_dictionaries({"Weight": st.floats(0, 100), "ServiceSubset": st.sampled_from(
    ["", "v1", "v2"])}), min_size=1, max_size=4))
def test_accepted_splits_always_total_100_percent(splits: list[dict[str, Any]]) -> None:
    resolver = {"Kind": "service-resolver", "Name": "web", "Subsets": {"v1": {}, "v2": {}}}
    state = ConsulState("dc1", {}, {
        "service-defaults": [{"Kind": "service-defaults", "Name": "web", "Protocol": "http"}],
        "service-resolver": [resolver],
        "service-splitter": [{"Kind": "service-splitter", "Name": "web", "Splits": splits}],
    })
    snapshot, problems = compile_consul(state, WorkloadIdentity())
    route = next(v for v in snapshot.route_configs["80"].virtual_hosts if v.name == "web.service.consul:80").routes[0]
    if problems:
        assert len(route.destinations) == 1  # the splitter was dropped: the resolver's own cluster
    else:
        assert abs(sum(d.weight for d in route.destinations) - 10000) <= len(splits)
