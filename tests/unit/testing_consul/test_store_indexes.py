"""The emulator store's index rules (Consul's blocking-query contract), without HTTP."""

from __future__ import annotations

import asyncio

import pytest

from meshlib.testing.consul.state import CatalogStore, CheckRecord, ServiceRecord


def make_store() -> CatalogStore:
    store = CatalogStore("dc1")
    store.ensure_node("n1", "10.0.0.1")
    return store


def add(store: CatalogStore, name: str, sid: str, node: str = "n1") -> None:
    store.set_service(ServiceRecord(node=node, service_id=sid, name=name, port=80))
    store.set_check(CheckRecord(node=node, check_id=f"service:{sid}", name="c", status="passing", service_id=sid))


def test_per_service_indexes_move_independently() -> None:
    store = make_store()
    add(store, "web", "web-1")
    add(store, "db", "db-1")
    web, db, services = store.service_index("web"), store.service_index("db"), store.table_index("services")
    store.set_check_status("n1", "service:db-1", "critical")
    assert store.service_index("web") == web
    assert store.service_index("db") > db
    assert store.table_index("services") == services  # a health flip is not a catalog change


def test_identical_writes_take_no_index() -> None:
    store = make_store()
    add(store, "web", "web-1")
    before = store.index
    add(store, "web", "web-1")
    store.set_check_status("n1", "service:web-1", "passing", "new output only")
    assert store.index == before
    assert store.checks[("n1", "service:web-1")].output == "new output only"


def test_node_level_checks_move_every_service_on_the_node() -> None:
    store = make_store()
    add(store, "web", "web-1")
    add(store, "db", "db-1")
    store.ensure_node("n2", "10.0.0.2")
    add(store, "api", "api-1", node="n2")
    web, api = store.service_index("web"), store.service_index("api")
    store.set_check_status("n1", "serfHealth", "critical")
    assert store.service_index("web") > web
    assert store.service_index("db") > web
    assert store.service_index("api") == api


def test_a_missing_service_reports_the_extinction_index() -> None:
    store = make_store()
    add(store, "web", "web-1")
    assert store.service_index("nothing") == store.table_index("nodes", "services")
    store.delete_service("n1", "web-1")
    extinction = store.table_index("service_extinction")
    assert store.service_index("web") == extinction
    add(store, "other", "other-1")
    assert store.service_index("web") == extinction  # unrelated registrations do not wake it
    assert store.instances("web") == []
    assert store.checks_for("n1", "web-1") == [store.checks[("n1", "serfHealth")]]


def test_config_entry_cas() -> None:
    store = make_store()
    entry = {"Kind": "service-defaults", "Name": "web", "Protocol": "http"}
    assert store.set_config_entry(entry, cas=0)
    assert not store.set_config_entry(entry, cas=0)
    modify = store.config_entries[("service-defaults", "web")]["ModifyIndex"]
    assert store.set_config_entry({**entry, "Protocol": "grpc"}, cas=modify)
    assert not store.delete_config_entry("service-defaults", "web", cas=modify)
    assert store.delete_config_entry("service-defaults", "web")


@pytest.mark.asyncio
async def test_waiters_wake_only_for_their_topics_and_on_restore() -> None:
    store = make_store()
    add(store, "web", "web-1")
    web_waiter = asyncio.create_task(store.wait_for_change(["service.web"], 5))
    await asyncio.sleep(0)
    add(store, "db", "db-1")
    await asyncio.sleep(0)
    assert not web_waiter.done()
    store.set_check_status("n1", "service:web-1", "warning")
    await asyncio.wait_for(web_waiter, 1)
    restore_waiter = asyncio.create_task(store.wait_for_change(["service.nothing"], 5))
    await asyncio.sleep(0)
    generation = store.generation
    store.restore_snapshot(2)
    await asyncio.wait_for(restore_waiter, 1)
    assert store.generation == generation + 1
    assert store.index == 2
    assert all(s.modify_index <= 2 for s in store.services.values())
