"""Istio overlay on Consul hosts: an overlay VirtualService replaces Consul's routing for its host."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from meshlib.config.files import read_resources

from .consul_data import ask, build, health_entry, messages, state

HTTP = {"Kind": "service-defaults", "Name": "web", "Protocol": "http"}
SUBSETS = {"Kind": "service-resolver", "Name": "web", "Subsets": {
    "v1": {"Filter": "Service.Meta.version == v1"}, "v2": {"Filter": "Service.Meta.version == v2"}},
    "Failover": {"v1": {"ServiceSubset": "v2"}}}
ROUTER = {"Kind": "service-router", "Name": "web", "Routes": [
    {"Match": {"HTTP": {"PathPrefix": "/old"}}, "Destination": {"ServiceSubset": "v1"}}]}
WEB = [health_entry("web", "10.0.0.1", 8080, meta={"version": "v1"}),
       health_entry("web", "10.0.0.2", 8080, meta={"version": "v2"})]
API = [health_entry("api", "10.0.2.1", 8000)]


def overlay(tmp_path: Path, text: str) -> list[Any]:
    path = tmp_path / "mesh" / "overlay.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    resources, problems = read_resources([path.parent])
    assert problems == []
    return list(resources)


VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web.service.consul]
  http:
  - name: new-api
    match: [{uri: {prefix: /new}}]
    route: [{destination: {host: web.service.consul, subset: v2}}]
    timeout: 2s
  - route: [{destination: {host: web.service.consul, subset: v1}}]
"""


def test_overlay_virtual_service_replaces_consul_router_for_its_host(tmp_path: Path) -> None:
    consul = state({"web": WEB, "api": API}, HTTP, dict(HTTP, Name="api"), SUBSETS, ROUTER)
    mesh, problems = build(consul, overlay=overlay(tmp_path, VS))
    assert problems == []
    new = ask(mesh, "http://web.service.consul/new/x")
    assert new["route"]["virtual_service"] == "default/web"  # explain shows the overlay decided
    assert (new["route"]["rule"], new["timeout_s"]) == ("new-api", 2.0)
    # A Consul resolver subset, through Consul's cluster (its filter and failover priorities).
    assert new["destinations"][0]["cluster"] == "outbound|80|v2|web.service.consul"
    assert new["endpoints"] == {"outbound|80|v2|web.service.consul": ["10.0.0.2:8080"]}
    old = ask(mesh, "http://web/old")  # the Consul router's /old route is gone: overlay's catch-all decides
    assert old["route"]["virtual_service"] == "default/web"
    assert old["destinations"][0]["cluster"] == "outbound|80|v1|web.service.consul"
    v1 = mesh.snapshot.clusters["outbound|80|v1|web.service.consul"]
    assert sorted((e.address, e.priority) for e in v1.endpoints) == [("10.0.0.1", 0), ("10.0.0.2", 1)]
    assert ask(mesh, "http://web.service.consul:8080/new")["route"]["virtual_service"] == "default/web"
    # A host the overlay does not cover keeps Consul's routing.
    assert ask(mesh, "http://api/")["route"]["virtual_service"] == "consul discovery-chain/api"


def test_without_overlay_consul_router_decides(tmp_path: Path) -> None:
    mesh, _ = build(state({"web": WEB}, HTTP, SUBSETS, ROUTER))
    assert ask(mesh, "http://web/old")["route"] == {"virtual_service": "consul service-router/web",
                                                   "rule": "Routes[0]", "index": 0}


def test_overlay_destination_rule_replaces_consul_clusters_of_its_host(tmp_path: Path) -> None:
    rule = VS + """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web.service.consul
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""
    mesh, problems = build(state({"web": WEB}, HTTP, SUBSETS), overlay=overlay(tmp_path, rule))
    assert problems == []
    new = ask(mesh, "http://web/new")
    assert new["lb"] == "RANDOM"
    assert new["endpoints"] == {"outbound|80|v2|web.service.consul": ["10.0.0.2:8080"]}


def test_overlay_service_entries_add_hosts(tmp_path: Path) -> None:
    extra = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: default}
spec:
  hosts: [payments.example.com]
  ports: [{number: 443, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.5.0.1}]
"""
    mesh, problems = build(state({"web": WEB}, HTTP), overlay=overlay(tmp_path, extra))
    assert problems == []
    assert ask(mesh, "http://payments.example.com:443/")["endpoints"] == {
        "outbound|443||payments.example.com": ["10.5.0.1:443"]}
    assert ask(mesh, "http://web/")["route"]["virtual_service"] == "consul discovery-chain/web"


def test_overlay_reference_problems_are_reported_and_other_hosts_keep_working(tmp_path: Path) -> None:
    bad = VS.replace("subset: v2", "subset: v7")
    mesh, problems = build(state({"web": WEB, "api": API}, HTTP, SUBSETS), overlay=overlay(tmp_path, bad))
    assert len(problems) == 1
    assert 'subset "v7"' in messages(problems)[0]
    assert "overlay.yaml" in messages(problems)[0]
    assert ask(mesh, "http://api/")["endpoints"] == {"outbound|80||api.service.consul": ["10.0.2.1:8000"]}


def test_overlay_changes_the_version(tmp_path: Path) -> None:
    consul = state({"web": WEB}, HTTP, SUBSETS)
    plain, _ = build(consul)
    with_overlay, _ = build(consul, overlay=overlay(tmp_path, VS))
    assert plain.snapshot.version == consul.version() != with_overlay.snapshot.version
