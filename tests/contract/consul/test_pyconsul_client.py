"""py-consul's synchronous client (a mission-required package) against the target, end to end."""

from __future__ import annotations

import threading

import consul as pyconsul

from tests.contract.consul.conftest import ConsulTarget


def test_health_blocking_query_through_pyconsul(consul_target: ConsulTarget, unique: str) -> None:
    client = consul_target.client()
    assert client.agent.service.register(unique, service_id=unique, port=1, check=pyconsul.Check.ttl("60s"))
    consul_target.deregister_later("service", unique)
    index, _ = client.health.service(unique)
    result: dict[str, object] = {}

    def watch() -> None:
        result["answer"] = client.health.service(unique, index=index, wait="20s", passing=True)

    watcher = threading.Thread(target=watch)
    watcher.start()
    watcher.join(0.3)
    assert watcher.is_alive(), "the blocking query returned before anything changed"
    assert consul_target.client().agent.check.ttl_pass(f"service:{unique}")
    watcher.join(10)
    assert not watcher.is_alive()
    new_index, entries = result["answer"]  # type: ignore[misc]
    assert int(new_index) > int(index)
    assert [e["Service"]["ID"] for e in entries] == [unique]


def test_config_entries_through_pyconsul(consul_target: ConsulTarget, unique: str) -> None:
    client = consul_target.client()
    assert client.config.set("service-defaults", unique, {"Protocol": "http"})
    consul_target.deregister_later("service-defaults", unique)
    assert client.config.set("service-resolver", unique, {"ConnectTimeout": "3s", "Subsets": {
        "v1": {"Filter": "Service.Meta.version == v1"}}, "DefaultSubset": "v1"})
    consul_target.deregister_later("service-resolver", unique)
    resolver = client.config.get("service-resolver", unique)
    assert resolver["ConnectTimeout"] == "3s"
    assert resolver["DefaultSubset"] == "v1"
    names = {e["Name"] for e in client.config.list("service-resolver")}
    assert unique in names
    assert client.config.delete("service-resolver", unique)
    assert client.config.get("service-resolver", unique) is None


def test_catalog_and_agent_through_pyconsul(consul_target: ConsulTarget, unique: str) -> None:
    client = consul_target.client()
    assert client.agent.service.register(unique, service_id=unique, port=8080, tags=["a"], meta={"k": "v"},
                                         weights={"Passing": 3, "Warning": 1})
    consul_target.deregister_later("service", unique)
    service = client.agent.services()[unique]
    assert (service["Service"], service["Port"], service["Tags"], service["Meta"]) == (unique, 8080, ["a"],
                                                                                       {"k": "v"})
    assert service["Weights"] == {"Passing": 3, "Warning": 1}
    _, services = client.catalog.services()
    assert services[unique] == ["a"]
    _, nodes = client.catalog.service(unique)
    assert nodes[0]["ServiceWeights"] == {"Passing": 3, "Warning": 1}
    assert client.agent.maintenance("true", "patching")
    try:
        _, entries = client.health.service(unique)
        node_checks = {c["CheckID"]: c for c in entries[0]["Checks"] if not c["ServiceID"]}
        assert node_checks["_node_maintenance"]["Status"] == "critical"
        assert node_checks["_node_maintenance"]["Notes"] == "patching"
        _, passing = client.health.service(unique, passing=True)
        assert passing == []
    finally:
        assert client.agent.maintenance("false")
    _, passing = client.health.service(unique, passing=True)
    assert [e["Service"]["ID"] for e in passing] == [unique]
