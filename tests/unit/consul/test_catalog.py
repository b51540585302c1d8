"""Consul's health semantics (agent/xds/endpoints.go calculateEndpointHealthAndWeight), one row per rule."""

from __future__ import annotations

from typing import Any

import pytest

from meshlib.config.model import Locality
from meshlib.discovery.consul.catalog import parse_instances

from .consul_data import health_entry

MAINTENANCE = {"CheckID": "_service_maintenance:web-1", "Name": "Service Maintenance Mode", "Status": "critical",
               "ServiceID": "web-1"}
NODE_MAINTENANCE = {"CheckID": "_node_maintenance", "Name": "Node Maintenance Mode", "Status": "critical",
                    "ServiceID": ""}

# (description, entry kwargs, only_passing, expected weight or None = excluded)
TABLE: list[tuple[str, dict[str, Any], bool, int | None]] = [
    ("all passing, default Weights", {}, False, 1),
    ("Weights.Passing used when passing", {"weights": {"Passing": 10, "Warning": 1}}, False, 10),
    ("a warning check → Weights.Warning", {"checks": ("warning",), "weights": {"Passing": 10, "Warning": 3}}, False, 3),
    ("warning with default Weights → 1", {"checks": ("warning",)}, False, 1),
    ("critical service check → excluded", {"checks": ("critical",)}, False, None),
    ("one of two checks critical → excluded", {"checks": ("passing", "critical")}, False, None),
    ("node-level serfHealth critical → excluded", {"node_checks": ("critical",)}, False, None),
    ("service maintenance → excluded", {"extra_checks": (MAINTENANCE,)}, False, None),
    ("node maintenance → excluded", {"extra_checks": (NODE_MAINTENANCE,)}, False, None),
    ("OnlyPassing: warning → excluded", {"checks": ("warning",)}, True, None),
    ("OnlyPassing: node warning → excluded", {"node_checks": ("warning",)}, True, None),
    ("OnlyPassing: all passing → kept", {}, True, 1),
    ("Warning weight 0 → excluded", {"checks": ("warning",), "weights": {"Passing": 1, "Warning": 0}}, False, None),
    ("Passing weight 0 → excluded", {"weights": {"Passing": 0, "Warning": 1}}, False, None),
    ("weight above 128 capped", {"weights": {"Passing": 500, "Warning": 1}}, False, 128),
    ("no checks at all → healthy", {"checks": (), "node_checks": ()}, False, 1),
]


@pytest.mark.parametrize(("case", "kwargs", "only_passing", "weight"), TABLE, ids=[row[0] for row in TABLE])
def test_health_and_weight(case: str, kwargs: dict[str, Any], only_passing: bool, weight: int | None) -> None:
    instances, problems = parse_instances("web", [health_entry("web", "10.0.0.1", 8080, instance_id="web-1",
                                                                **kwargs)])
    assert problems == []
    endpoint = instances[0].endpoint(only_passing)
    assert (endpoint.weight if endpoint is not None else None) == weight, case


def test_empty_service_address_falls_back_to_node_address() -> None:
    instances, _ = parse_instances("web", [health_entry("web", "", 8080, node_address="10.1.1.1")])
    assert (instances[0].address, instances[0].port) == ("10.1.1.1", 8080)


def test_remote_datacenter_prefers_wan_addresses_case_insensitively() -> None:
    entry = health_entry("web", "10.0.0.5", 8080)
    entry["Service"]["TaggedAddresses"] = {"lan": {"address": "10.0.0.5", "port": 8080},
                                           "wan": {"address": "198.18.0.5", "port": 443}}
    local, _ = parse_instances("web", [entry])
    remote, _ = parse_instances("web", [entry], remote=True)
    assert (local[0].address, local[0].port) == ("10.0.0.5", 8080)
    assert (remote[0].address, remote[0].port) == ("198.18.0.5", 443)


def test_labels_locality_and_tags() -> None:
    entry = health_entry("web", "10.0.0.1", 8080, meta={"version": "v2"}, tags=("primary",),
                         locality={"Region": "eu-west-1", "Zone": "eu-west-1a"})
    instance = parse_instances("web", [entry])[0][0]
    assert dict(instance.labels) == {"version": "v2", "consul.tag/primary": "true"}
    assert instance.locality == Locality("eu-west-1", "eu-west-1a")
    entry["Service"]["Locality"] = {"Region": "us-east-1", "Zone": "us-east-1b"}  # the service's own wins
    assert parse_instances("web", [entry])[0][0].locality == Locality("us-east-1", "us-east-1b")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e["Service"].update(Port=0),
         "consul health/web: [0].Service.Port: must be between 1 and 65535, not 0"),
        (lambda e: e["Service"].update(Port="80"),
         "consul health/web: [0].Service.Port: must be between 1 and 65535, not '80'"),
        (lambda e: e["Service"].update(Address="not an address!"),
         "consul health/web: [0].Service.Address: not an IP address or host name: 'not an address!'"),
        (lambda e: (e["Service"].update(Address=""), e["Node"].update(Address="")),
         "consul health/web: [0].Node.Address: no address (Service.Address and Node.Address are both empty)"),
        (lambda e: e["Service"].update(Weights={"Passing": "x"}),
         "consul health/web: [0].Service.Weights.Passing: must be an integer"),
        (lambda e: e["Service"].update(SocketPath="/tmp/web.sock"),
         "consul health/web: [0].Service.SocketPath: unix-socket services cannot be dialled by meshlib"),
    ],
)
def test_hostile_entries_are_skipped_with_a_problem(mutate: Any, message: str) -> None:
    bad = health_entry("web", "10.0.0.1", 8080)
    mutate(bad)
    good = health_entry("web", "10.0.0.2", 8080)
    instances, problems = parse_instances("web", [bad, good])
    assert [i.address for i in instances] == ["10.0.0.2"]
    assert [str(p) for p in problems] == [message]


def test_non_objects_and_proxies_are_not_instances() -> None:
    proxy = health_entry("web", "10.0.0.3", 21000)
    proxy["Service"]["Kind"] = "connect-proxy"
    instances, problems = parse_instances("web", ["junk", proxy])  # type: ignore[list-item]
    assert instances == []
    assert [str(p) for p in problems] == ["consul health/web: [0].: a health entry must be a JSON object"]
