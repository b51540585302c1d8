"""Registration through the agent API and what health/catalog answer afterwards."""

from __future__ import annotations

import aiohttp
import consul as pyconsul
import pytest

from tests.contract.consul.conftest import ConsulTarget

HEALTH_ENTRY_KEYS = {"Node", "Service", "Checks"}
NODE_KEYS = {"ID", "Node", "Address", "Datacenter", "TaggedAddresses", "Meta", "CreateIndex", "ModifyIndex"}
SERVICE_KEYS = {"ID", "Service", "Tags", "Address", "Meta", "Port", "Weights", "EnableTagOverride", "CreateIndex",
                "ModifyIndex"}
CHECK_KEYS = {"Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceID", "ServiceName", "ServiceTags",
              "Type", "CreateIndex", "ModifyIndex"}


def register(target: ConsulTarget, name: str, service_id: str, port: int, **kwargs: object) -> None:
    assert target.client().agent.service.register(name, service_id=service_id, port=port, **kwargs)
    target.deregister_later("service", service_id)


def test_pyconsul_registration_shows_in_health_with_consul_shapes(consul_target: ConsulTarget, unique: str) -> None:
    client = consul_target.client()
    register(consul_target, unique, f"{unique}-1", 8080, tags=["v1", "primary"], meta={"version": "1"},
             check=pyconsul.Check.ttl("30s"))
    index, entries = client.health.service(unique)
    consul_target.record("health_service", entries)
    assert isinstance(index, str)
    assert int(index) >= 1
    assert len(entries) == 1
    entry = entries[0]
    assert set(entry) >= HEALTH_ENTRY_KEYS
    assert set(entry["Node"]) >= NODE_KEYS
    assert set(entry["Service"]) >= SERVICE_KEYS
    service = entry["Service"]
    assert (service["ID"], service["Service"], service["Port"]) == (f"{unique}-1", unique, 8080)
    assert service["Tags"] == ["v1", "primary"]
    assert service["Meta"] == {"version": "1"}
    assert service["Address"] == ""  # no address registered: clients must fall back to Node.Address
    assert entry["Node"]["Address"]
    assert service["Weights"] == {"Passing": 1, "Warning": 1}
    by_id = {c["CheckID"]: c for c in entry["Checks"]}
    assert set(by_id) == {"serfHealth", f"service:{unique}-1"}
    for check in entry["Checks"]:
        assert set(check) >= CHECK_KEYS
    own = by_id[f"service:{unique}-1"]
    assert own["Status"] == "critical"  # a TTL check starts critical
    assert own["Name"] == f"Service '{unique}' check"
    assert own["Type"] == "ttl"
    assert own["ServiceName"] == unique
    serf = by_id["serfHealth"]
    assert (serf["ServiceID"], serf["ServiceTags"], serf["Type"]) == ("", [], "")
    assert (serf["Interval"], serf["Timeout"], serf["Definition"]) == ("", "", {})  # omitempty definition


def test_passing_filter_and_ttl_updates(consul_target: ConsulTarget, unique: str) -> None:
    client = consul_target.client()
    register(consul_target, unique, f"{unique}-a", 8001, check=pyconsul.Check.ttl("60s"))
    register(consul_target, unique, f"{unique}-b", 8002, check=pyconsul.Check.ttl("60s"))
    assert client.agent.check.ttl_pass(f"service:{unique}-a", "fine")
    assert client.agent.check.ttl_warn(f"service:{unique}-b", "slow")
    _, passing = client.health.service(unique, passing=True)
    assert [e["Service"]["ID"] for e in passing] == [f"{unique}-a"]
    _, everything = client.health.service(unique)
    statuses = {e["Service"]["ID"]: next(c["Status"] for c in e["Checks"] if c["ServiceID"]) for e in everything}
    assert statuses == {f"{unique}-a": "passing", f"{unique}-b": "warning"}
    output = next(c for e in everything for c in e["Checks"] if c["CheckID"] == f"service:{unique}-a")["Output"]
    assert output == "fine"
    assert client.agent.check.ttl_fail(f"service:{unique}-a")
    _, passing = client.health.service(unique, passing=True)
    assert passing == []


@pytest.mark.asyncio
async def test_check_update_endpoint_and_bad_status(consul_target: ConsulTarget, unique: str) -> None:
    register(consul_target, unique, unique, 8003, check=pyconsul.Check.ttl("60s"))
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        async with http.put(f"{consul_target.url}/v1/agent/check/update/service:{unique}",
                            json={"Status": "warning", "Output": "half"}) as resp:
            assert resp.status == 200
        async with http.put(f"{consul_target.url}/v1/agent/check/update/service:{unique}",
                            json={"Status": "sideways"}) as resp:
            assert resp.status == 400
            assert "Invalid check status" in await resp.text()
        async with http.get(f"{consul_target.url}/v1/health/service/{unique}") as resp:
            checks = (await resp.json())[0]["Checks"]
    own = next(c for c in checks if c["ServiceID"] == unique)
    assert (own["Status"], own["Output"]) == ("warning", "half")


@pytest.mark.asyncio
async def test_camel_case_and_snake_case_bodies_mean_the_same(consul_target: ConsulTarget, unique: str) -> None:
    body = {
        "Name": unique, "ID": f"{unique}-camel", "Port": 9001, "Address": "127.0.0.1",
        "Weights": {"Passing": 10, "Warning": 1}, "EnableTagOverride": True,
        "Checks": [{"CheckID": f"{unique}-c1", "TTL": "30s", "Status": "passing"},
                   {"Name": "second", "TTL": "30s", "Notes": "n", "DeregisterCriticalServiceAfter": "90m"}],
    }
    snake = {"name": unique, "id": f"{unique}-snake", "port": 9002, "address": "127.0.0.1",
             "weights": {"passing": 10, "warning": 1}, "enable_tag_override": True,
             "check": {"ttl": "30s", "status": "warning", "deregister_critical_service_after": "90m"}}
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        for payload in (body, snake):
            await consul_target.register_service(http, payload, payload.get("ID") or payload["id"])  # type: ignore[arg-type]
        async with http.get(f"{consul_target.url}/v1/health/service/{unique}") as resp:
            entries = {e["Service"]["ID"]: e for e in await resp.json()}
    camel, snake_entry = entries[f"{unique}-camel"], entries[f"{unique}-snake"]
    for entry in (camel, snake_entry):
        assert entry["Service"]["Weights"] == {"Passing": 10, "Warning": 1}
        assert entry["Service"]["EnableTagOverride"] is True
        assert entry["Service"]["Address"] == "127.0.0.1"
    camel_checks = {c["CheckID"]: c for c in camel["Checks"] if c["ServiceID"]}
    # Explicit CheckID kept; the unnamed second of two checks is service:<id>:2 (1-based position).
    assert set(camel_checks) == {f"{unique}-c1", f"service:{unique}-camel:2"}
    assert camel_checks[f"{unique}-c1"]["Status"] == "passing"
    assert camel_checks[f"service:{unique}-camel:2"]["Name"] == "second"
    assert camel_checks[f"service:{unique}-camel:2"]["Notes"] == "n"
    snake_checks = [c for c in snake_entry["Checks"] if c["ServiceID"]]
    assert [(c["CheckID"], c["Status"]) for c in snake_checks] == [(f"service:{unique}-snake", "warning")]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Port": 80}, "Missing service name"),
        ({"Name": "x", "Address": "0.0.0.0"}, "Invalid service address"),
        ({"Name": "x", "Check": {"HTTP": "http://127.0.0.1:1/"}}, "Interval must be > 0"),
        ({"Name": "x", "Check": {"Interval": "10s"}}, "TTL must be > 0 for TTL checks"),
        ({"Name": "x", "Check": {"TTL": "10s", "Interval": "10s"}}, "Interval and TTL cannot both be specified"),
        ({"Name": "x", "Check": {"TTL": "10s", "Status": "ok"}}, "Status for checks must"),
        ({"Name": "x", "Weights": {"Passing": 0, "Warning": 1}}, "Invalid Weights: Passing must be greater than 0"),
        ({"Name": "x", "Meta": {"bad key": "v"}}, "Invalid Service Meta"),
        ({"Name": "x", "Meta": {"consul-x": "v"}}, "reserved for internal use"),
        ({"Name": "x", "Port": "eighty"}, "Request decode failed"),
        ({"Name": "x", "Check": {"TTL": "ten seconds"}}, "Request decode failed"),
    ],
)
async def test_bad_registrations_are_rejected_with_consuls_message(
        consul_target: ConsulTarget, body: dict[str, object], message: str) -> None:
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:  # noqa: SIM117
        async with http.put(f"{consul_target.url}/v1/agent/service/register", json=body) as resp:
            assert resp.status == 400
            assert message in await resp.text()


@pytest.mark.asyncio
async def test_deregister_and_unknown_ids(consul_target: ConsulTarget, unique: str) -> None:
    client = consul_target.client()
    assert client.agent.service.register(unique, service_id=unique, port=7000)
    assert unique in client.agent.services()
    assert client.agent.service.deregister(unique)
    assert unique not in client.agent.services()
    _, entries = client.health.service(unique)
    assert entries == []
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        async with http.put(f"{consul_target.url}/v1/agent/service/deregister/{unique}") as resp:
            assert resp.status == 404
            assert "Unknown service ID" in await resp.text()
        async with http.put(f"{consul_target.url}/v1/agent/check/pass/no-such-check-{unique}") as resp:
            assert resp.status in (404, 500)
            assert "does not have associated TTL" in await resp.text()


@pytest.mark.asyncio
async def test_replace_existing_checks(consul_target: ConsulTarget, unique: str) -> None:
    client = consul_target.client()
    register(consul_target, unique, unique, 7001, check=pyconsul.Check.ttl("30s"),
             extra_checks=[{"CheckID": f"{unique}-extra", "TTL": "30s"}])
    own = {c["CheckID"] for c in client.agent.checks().values() if c["ServiceID"] == unique}
    assert own == {f"service:{unique}:1", f"{unique}-extra"}
    # Without the flag a re-registration keeps checks it does not mention; with it they go.
    register(consul_target, unique, unique, 7001, check={"CheckID": f"{unique}-extra", "TTL": "30s"})
    own = {c["CheckID"] for c in client.agent.checks().values() if c["ServiceID"] == unique}
    assert own == {f"service:{unique}:1", f"{unique}-extra"}
    register(consul_target, unique, unique, 7001, check={"CheckID": f"{unique}-extra", "TTL": "30s"},
             replace_existing_checks=True)
    own = {c["CheckID"] for c in client.agent.checks().values() if c["ServiceID"] == unique}
    assert own == {f"{unique}-extra"}


@pytest.mark.asyncio
async def test_service_and_node_maintenance(consul_target: ConsulTarget, unique: str) -> None:
    client = consul_target.client()
    register(consul_target, unique, unique, 7002, check={"TTL": "60s", "Status": "passing"})
    assert client.agent.service.maintenance(unique, "true", "deploying")
    _, entries = client.health.service(unique)
    maintenance = [c for c in entries[0]["Checks"] if c["CheckID"] == f"_service_maintenance:{unique}"]
    assert len(maintenance) == 1
    assert (maintenance[0]["Status"], maintenance[0]["Notes"]) == ("critical", "deploying")
    assert maintenance[0]["Name"] == "Service Maintenance Mode"
    _, passing = client.health.service(unique, passing=True)
    assert passing == []
    assert client.agent.service.maintenance(unique, "false")
    _, passing = client.health.service(unique, passing=True)
    assert [e["Service"]["ID"] for e in passing] == [unique]
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        async with http.put(f"{consul_target.url}/v1/agent/service/maintenance/{unique}") as resp:
            assert resp.status == 400
            assert "Missing value for enable" in await resp.text()
        async with http.put(f"{consul_target.url}/v1/agent/service/maintenance/nope-{unique}?enable=true") as resp:
            assert resp.status == 404


@pytest.mark.asyncio
async def test_catalog_endpoints(consul_target: ConsulTarget, unique: str) -> None:
    client = consul_target.client()
    register(consul_target, unique, f"{unique}-1", 7100, tags=["a", "b"])
    register(consul_target, unique, f"{unique}-2", 7101, tags=["b", "c"])
    index, services = client.catalog.services()
    assert int(index) >= 1
    assert sorted(services[unique]) == ["a", "b", "c"]
    _, nodes = client.catalog.service(unique)
    consul_target.record("catalog_service", nodes)
    assert {n["ServiceID"] for n in nodes} == {f"{unique}-1", f"{unique}-2"}
    for node in nodes:
        assert {"Node", "Address", "Datacenter", "ServiceName", "ServicePort", "ServiceTags", "ServiceAddress",
                "ServiceMeta", "ServiceWeights", "CreateIndex", "ModifyIndex"} <= set(node)
    _, tagged = client.catalog.service(unique, tag="c")
    assert [n["ServiceID"] for n in tagged] == [f"{unique}-2"]
    _, all_nodes = client.catalog.nodes()
    assert all_nodes
    assert {"Node", "Address", "Datacenter"} <= set(all_nodes[0])
    leader = client.status.leader()
    assert leader
    assert client.agent.self()["Config"]["Datacenter"]


@pytest.mark.asyncio
async def test_tag_and_filter_query_parameters(consul_target: ConsulTarget, unique: str) -> None:
    register(consul_target, unique, f"{unique}-1", 7200, tags=["v1"], meta={"version": "1"})
    register(consul_target, unique, f"{unique}-2", 7201, tags=["v2", "canary"], meta={"version": "2"})
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        async with http.get(f"{consul_target.url}/v1/health/service/{unique}",
                            params=[("tag", "v2"), ("tag", "canary")]) as resp:
            assert [e["Service"]["ID"] for e in await resp.json()] == [f"{unique}-2"]
        async with http.get(f"{consul_target.url}/v1/health/service/{unique}",
                            params={"filter": 'Service.Meta.version == "1"'}) as resp:
            assert resp.status == 200
            assert [e["Service"]["ID"] for e in await resp.json()] == [f"{unique}-1"]
        async with http.get(f"{consul_target.url}/v1/health/service/{unique}",
                            params={"filter": '"canary" in Service.Tags'}) as resp:
            assert [e["Service"]["ID"] for e in await resp.json()] == [f"{unique}-2"]
        async with http.get(f"{consul_target.url}/v1/health/service/{unique}",
                            params={"filter": "Service.Meta.version =="}) as resp:
            assert resp.status >= 400
            assert "Failed to create boolean expression evaluator" in await resp.text()


@pytest.mark.asyncio
async def test_health_checks_state_and_node_endpoints(consul_target: ConsulTarget, unique: str) -> None:
    register(consul_target, unique, f"{unique}-1", 7300, check={"TTL": "60s", "Status": "warning"})
    client = consul_target.client()
    node = client.agent.self()["Config"]["NodeName"]
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        async with http.get(f"{consul_target.url}/v1/health/checks/{unique}") as resp:
            checks = await resp.json()
            assert int(resp.headers["X-Consul-Index"]) >= 1
        assert [(c["CheckID"], c["Status"]) for c in checks] == [(f"service:{unique}-1", "warning")]
        async with http.get(f"{consul_target.url}/v1/health/state/warning") as resp:
            warning = {c["CheckID"] for c in await resp.json()}
        assert f"service:{unique}-1" in warning
        async with http.get(f"{consul_target.url}/v1/health/state/passing") as resp:
            assert f"service:{unique}-1" not in {c["CheckID"] for c in await resp.json()}
        async with http.get(f"{consul_target.url}/v1/health/node/{node}") as resp:
            on_node = {c["CheckID"] for c in await resp.json()}
        assert {"serfHealth", f"service:{unique}-1"} <= on_node
        async with http.get(f"{consul_target.url}/v1/health/state/sideways") as resp:
            assert resp.status == 400


@pytest.mark.asyncio
async def test_agent_local_health_endpoints(consul_target: ConsulTarget, unique: str) -> None:
    register(consul_target, unique, f"{unique}-1", 7400, check={"TTL": "60s", "Status": "passing"})
    register(consul_target, unique, f"{unique}-2", 7401, check={"TTL": "60s", "Status": "warning"})
    base = f"{consul_target.url}/v1/agent/health/service"
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        async with http.get(f"{base}/id/{unique}-1") as resp:
            assert resp.status == 200
            info = await resp.json()
        assert info["AggregatedStatus"] == "passing"
        assert info["Service"]["ID"] == f"{unique}-1"
        async with http.get(f"{base}/id/{unique}-2", params={"format": "text"}) as resp:
            assert (resp.status, await resp.text()) == (429, "warning")
        async with http.get(f"{base}/name/{unique}") as resp:
            assert resp.status == 429  # the worst instance decides
            assert sorted(i["Service"]["ID"] for i in await resp.json()) == [f"{unique}-1", f"{unique}-2"]
        async with http.put(f"{consul_target.url}/v1/agent/service/maintenance/{unique}-1",
                            params={"enable": "true"}) as resp:
            assert resp.status == 200
        async with http.get(f"{base}/id/{unique}-1") as resp:
            assert resp.status == 503
            assert (await resp.json())["AggregatedStatus"] == "maintenance"
        async with http.get(f"{base}/id/{unique}-none") as resp:
            assert resp.status == 404
        async with http.get(f"{base}/name/{unique}-none", params={"format": "text"}) as resp:
            assert (resp.status, await resp.text()) == (404, f"ServiceName {unique}-none Not Found")


@pytest.mark.asyncio
async def test_catalog_services_filter(consul_target: ConsulTarget, unique: str) -> None:
    register(consul_target, f"{unique}-a", f"{unique}-a", 7500, tags=["blue"])
    register(consul_target, f"{unique}-b", f"{unique}-b", 7501, tags=["green"])
    expression = f'ServiceName matches "^{unique}" and "blue" in ServiceTags'
    async with aiohttp.ClientSession(headers=consul_target.headers) as http, \
            http.get(f"{consul_target.url}/v1/catalog/services", params={"filter": expression}) as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {f"{unique}-a": ["blue"]}


@pytest.mark.asyncio
async def test_other_config_entry_kinds_are_stored(consul_target: ConsulTarget, unique: str) -> None:
    entry = {"Kind": "service-intentions", "Name": unique,
             "Sources": [{"Name": f"{unique}-web", "Action": "allow"}]}
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        async with http.put(f"{consul_target.url}/v1/config", json=entry) as resp:
            assert resp.status == 200, await resp.text()
        consul_target.deregister_later("service-intentions", unique)
        async with http.get(f"{consul_target.url}/v1/config/service-intentions/{unique}") as resp:
            stored = await resp.json()
    assert stored["Kind"] == "service-intentions"
    assert [(s["Name"], s["Action"]) for s in stored["Sources"]] == [(f"{unique}-web", "allow")]
    assert stored["ModifyIndex"] >= stored["CreateIndex"] >= 1
