"""Emulator-only controls (outages, snapshot restore, latency, counts, ACLs, datacenters, locality).

Each test is skipped against a real agent: there is no API to make a real
cluster lose its leader on demand.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from meshlib.testing.consul import AclToken
from tests.contract.consul.conftest import REAL_AGENT, SKIP_REAL, ConsulTarget


async def status_and_text(http: aiohttp.ClientSession, method: str, url: str, **kwargs: object) -> tuple[int, str]:
    async with http.request(method, url, **kwargs) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.text()


@pytest.mark.asyncio
async def test_refused_outage_closes_the_listener_and_comes_back_on_the_same_port(consul_target: ConsulTarget) -> None:
    emu = consul_target.emu()
    emu.call(emu.emulator.add_service, "web", 8080)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{emu.url}/v1/health/service/web") as resp:
            index = resp.headers["X-Consul-Index"]
        blocked = asyncio.create_task(status_and_text(http, "GET", f"{emu.url}/v1/health/service/web",
                                                      params={"index": index, "wait": "30s"}))
        await asyncio.to_thread(emu.call, emu.emulator.wait_blocked, 1)
        emu.call(emu.emulator.go_down, "refuse")
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(blocked, 5)  # the parked long-poll is cut, not left hanging
        with pytest.raises(aiohttp.ClientConnectorError):
            await http.get(f"{emu.url}/v1/health/service/web")
        emu.call(emu.emulator.come_back)
        async with http.get(f"{emu.url}/v1/health/service/web") as resp:
            assert resp.status == 200
            assert [e["Service"]["Service"] for e in await resp.json()] == ["web"]


@pytest.mark.asyncio
async def test_no_leader_fails_default_reads_and_writes_but_serves_stale_reads(consul_target: ConsulTarget) -> None:
    emu = consul_target.emu()
    emu.call(emu.emulator.add_service, "web", 8080)
    emu.call(emu.emulator.go_down, "no-leader")
    async with aiohttp.ClientSession() as http:
        assert await status_and_text(http, "GET", f"{emu.url}/v1/health/service/web") == (500, "No cluster leader")
        assert await status_and_text(http, "PUT", f"{emu.url}/v1/config",
                                     json={"Kind": "service-defaults", "Name": "x"}) == (500, "No cluster leader")
        # The agent still takes registrations into its local state, as a real agent does.
        assert (await status_and_text(http, "PUT", f"{emu.url}/v1/agent/service/register",
                                      json={"Name": "x"}))[0] == 200
        async with http.get(f"{emu.url}/v1/health/service/web", params={"stale": ""}) as resp:
            assert resp.status == 200
            assert resp.headers["X-Consul-KnownLeader"] == "false"
            assert len(await resp.json()) == 1
        assert await status_and_text(http, "GET", f"{emu.url}/v1/status/leader") == (200, '""')
        emu.call(emu.emulator.come_back)
        async with http.get(f"{emu.url}/v1/health/service/web") as resp:
            assert resp.status == 200
            assert resp.headers["X-Consul-KnownLeader"] == "true"


@pytest.mark.asyncio
async def test_error_mode_answers_every_request_with_the_given_status(consul_target: ConsulTarget) -> None:
    emu = consul_target.emu()
    emu.call(emu.emulator.go_down, "error", status=503, body="rpc error: overloaded")
    async with aiohttp.ClientSession() as http:
        assert await status_and_text(http, "GET", f"{emu.url}/v1/catalog/services") == (503, "rpc error: overloaded")
        emu.call(emu.emulator.come_back)
        assert (await status_and_text(http, "GET", f"{emu.url}/v1/catalog/services"))[0] == 200


@pytest.mark.asyncio
async def test_snapshot_restore_releases_blocked_queries_with_a_lower_index(consul_target: ConsulTarget) -> None:
    emu = consul_target.emu()
    for port in range(8000, 8010):
        emu.call(emu.emulator.add_service, "web", port)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{emu.url}/v1/health/service/web") as resp:
            index = int(resp.headers["X-Consul-Index"])
        assert index > 5

        async def watch() -> int:
            async with http.get(f"{emu.url}/v1/health/service/web",
                                params={"index": str(index), "wait": "60s"}) as resp:
                return int(resp.headers["X-Consul-Index"])

        blocked = asyncio.create_task(watch())
        await asyncio.to_thread(emu.call, emu.emulator.wait_blocked, 1)
        emu.call(emu.emulator.restore_snapshot, 3)
        restored = await asyncio.wait_for(blocked, 5)
        assert restored <= 3 < index  # backwards: a correct client resets its index to 0
        emu.call(emu.emulator.set_check_status, "web-127.0.0.1-8000", "critical")
        async with http.get(f"{emu.url}/v1/health/service/web") as resp:
            assert int(resp.headers["X-Consul-Index"]) == 4  # writes continue from the restored index


@pytest.mark.asyncio
async def test_latency_and_request_counts_prove_long_polling(consul_target: ConsulTarget) -> None:
    emu = consul_target.emu()
    emu.call(emu.emulator.add_service, "web", 8080)
    emu.call(emu.emulator.reset_counts)
    async with aiohttp.ClientSession() as http:
        index = "0"
        started = time.monotonic()
        for _ in range(3):  # an idle watch: one request per wait period, not a storm
            async with http.get(f"{emu.url}/v1/health/service/web", params={"index": index, "wait": "300ms"}) as r:
                index = r.headers["X-Consul-Index"]
        idle = time.monotonic() - started
        assert emu.call(emu.emulator.count, "GET /v1/health/service/") == 3  # read in the emulator's thread
        assert idle >= 0.55  # two of the three calls blocked for their full wait
        emu.call(emu.emulator.set_latency, 0.2)
        started = time.monotonic()
        async with http.get(f"{emu.url}/v1/catalog/services") as resp:
            assert resp.status == 200
        assert time.monotonic() - started >= 0.2
        async with http.get(f"{emu.url}/_emulator/requests") as resp:
            counts = await resp.json()
    assert counts["GET /v1/health/service/{service}"] == 3
    assert counts["GET /v1/catalog/services"] == 1
    records = emu.call(list, emu.emulator.requests)
    assert [r.blocking for r in records[:3]] == [False, True, True]


@pytest.mark.asyncio
async def test_datacenters_and_locality(consul_target: ConsulTarget) -> None:
    emu = consul_target.emu()
    emulator = emu.emulator
    emu.call(emulator.add_service, "web", 8080, datacenter="dc2", node="dc2-node",
             node_locality={"Region": "eu-west-1", "Zone": "eu-west-1a"})
    emu.call(emulator.add_service, "web", 8081, node="dc1-node")
    emu.call(emulator.set_node_locality, "dc1-node", "us-east-1", "us-east-1b")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{emu.url}/v1/catalog/datacenters") as resp:
            assert await resp.json() == ["dc1", "dc2"]
        async with http.get(f"{emu.url}/v1/health/service/web", params={"dc": "dc2"}) as resp:
            remote = await resp.json()
        async with http.get(f"{emu.url}/v1/health/service/web") as resp:
            local = await resp.json()
    assert [(e["Service"]["Port"], e["Node"]["Datacenter"]) for e in remote] == [(8080, "dc2")]
    assert remote[0]["Node"]["Locality"] == {"Region": "eu-west-1", "Zone": "eu-west-1a"}
    assert [(e["Service"]["Port"], e["Node"]["Locality"]) for e in local] == [
        (8081, {"Region": "us-east-1", "Zone": "us-east-1b"})]


@pytest.mark.asyncio
async def test_acl_tokens(consul_target: ConsulTarget) -> None:
    emu = consul_target.emu()
    emu.call(emu.emulator.add_service, "web", 8080)
    emu.call(emu.emulator.add_service, "db", 5432)
    reader = AclToken("reader-secret", rules={"service": {"web": "read"}, "node": {"": "read"}})
    writer = AclToken("writer-secret", rules={"service": {"": "write"}, "node": {"": "read"}})
    emu.call(emu.emulator.enable_acls, [reader, writer, AclToken.management_token("root")])
    url = emu.url
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/v1/health/service/web") as resp:  # anonymous, default deny: filtered
            assert (resp.status, await resp.json()) == (200, [])
            assert resp.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
        async with http.get(f"{url}/v1/health/service/web", headers={"X-Consul-Token": "reader-secret"}) as resp:
            assert len(await resp.json()) == 1
        async with http.get(f"{url}/v1/health/service/web", headers={"Authorization": "Bearer reader-secret"}) as r:
            assert len(await r.json()) == 1
        async with http.get(f"{url}/v1/catalog/services", params={"token": "reader-secret"}) as resp:
            assert await resp.json() == {"web": []}
        status, text = await status_and_text(http, "GET", f"{url}/v1/catalog/services",
                                             headers={"X-Consul-Token": "wrong"})
        assert (status, text) == (403, "ACL not found")
        status, text = await status_and_text(http, "PUT", f"{url}/v1/agent/service/register",
                                             json={"Name": "web", "Port": 1},
                                             headers={"X-Consul-Token": "reader-secret"})
        assert status == 403
        assert text.startswith("Permission denied")
        assert "lacks permission 'service:write' on \"web\"" in text
        status, _ = await status_and_text(http, "PUT", f"{url}/v1/agent/service/register",
                                          json={"Name": "web", "Port": 1},
                                          headers={"X-Consul-Token": "writer-secret"})
        assert status == 200
        status, text = await status_and_text(http, "PUT", f"{url}/v1/config",
                                             json={"Kind": "proxy-defaults", "Name": "global"},
                                             headers={"X-Consul-Token": "writer-secret"})
        assert status == 403
        assert "operator:write" in text
        status, _ = await status_and_text(http, "PUT", f"{url}/v1/config",
                                          json={"Kind": "proxy-defaults", "Name": "global"},
                                          headers={"X-Consul-Token": "root"})
        assert status == 200


@pytest.mark.asyncio
async def test_http_control_api(consul_target: ConsulTarget) -> None:
    emu = consul_target.emu()
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{emu.url}/_emulator/service", json={"name": "api", "port": 9000,
                                                                  "tags": ["v2"], "status": "warning"}) as resp:
            service_id = (await resp.json())["ID"]
        async with http.get(f"{emu.url}/v1/health/service/api", params={"passing": "1"}) as resp:
            assert await resp.json() == []
        async with http.put(f"{emu.url}/_emulator/check/{service_id}", params={"status": "passing"}) as resp:
            assert resp.status == 200
        async with http.get(f"{emu.url}/v1/health/service/api", params={"passing": "1"}) as resp:
            assert [e["Service"]["Tags"] for e in await resp.json()] == [["v2"]]
        async with http.put(f"{emu.url}/_emulator/outage", params={"mode": "no-leader"}) as resp:
            assert resp.status == 200
        assert (await status_and_text(http, "GET", f"{emu.url}/v1/catalog/services"))[0] == 500
        async with http.delete(f"{emu.url}/_emulator/outage") as resp:
            assert resp.status == 200
        async with http.put(f"{emu.url}/_emulator/check/nothing", params={"status": "passing"}) as resp:
            assert resp.status == 404
        async with http.put(f"{emu.url}/_emulator/latency", params={"seconds": "-4"}) as resp:
            assert resp.status == 400


@pytest.mark.asyncio
@pytest.mark.skipif(bool(REAL_AGENT), reason=SKIP_REAL)
async def test_agent_locality_is_inherited_by_registrations() -> None:
    from meshlib.testing.consul import consul_emulator

    locality = {"Region": "us-east-1", "Zone": "us-east-1a"}
    async with consul_emulator(set_env=False, locality=locality) as consul, aiohttp.ClientSession() as http:
        async with http.put(f"{consul.url}/v1/agent/service/register",
                            json={"Name": "web", "Port": 80, "Address": "127.0.0.1"}) as resp:
            assert resp.status == 200
        async with http.put(f"{consul.url}/v1/agent/service/register",
                            json={"Name": "db", "Port": 5432, "Locality": {"Region": "eu-west-1"}}) as resp:
            assert resp.status == 200
        async with http.get(f"{consul.url}/v1/health/service/web") as resp:
            (entry,) = await resp.json()
        async with http.get(f"{consul.url}/v1/health/service/db") as resp:
            (db,) = await resp.json()
    assert entry["Node"]["Locality"] == locality
    assert entry["Service"]["Locality"] == locality
    assert entry["Service"]["TaggedAddresses"]["lan_ipv4"] == {"Address": "127.0.0.1", "Port": 80}
    assert db["Service"]["Locality"] == {"Region": "eu-west-1"}


@pytest.mark.asyncio
async def test_a_remote_datacenter_can_become_unreachable(consul_target: ConsulTarget) -> None:
    emu = consul_target.emu()
    emu.call(emu.emulator.add_service, "web", 8080, datacenter="dc2")
    async with aiohttp.ClientSession() as http:
        assert (await status_and_text(http, "GET", f"{emu.url}/v1/health/service/web", params={"dc": "dc2"}))[0] == 200
        async with http.put(f"{emu.url}/_emulator/datacenter/dc2", params={"reachable": "false"}) as resp:
            assert resp.status == 200
        assert await status_and_text(http, "GET", f"{emu.url}/v1/health/service/web", params={"dc": "dc2"}) == (
            500, "No path to datacenter")
        assert (await status_and_text(http, "GET", f"{emu.url}/v1/health/service/web"))[0] == 200  # dc1 fine
        emu.call(emu.emulator.set_datacenter_reachable, "dc2", True)
        assert (await status_and_text(http, "GET", f"{emu.url}/v1/health/service/web", params={"dc": "dc2"}))[0] == 200
        async with http.put(f"{emu.url}/_emulator/datacenter/dc1", params={"reachable": "false"}) as resp:
            assert resp.status == 400


@pytest.mark.asyncio
async def test_hang_holds_requests_until_come_back(consul_target: ConsulTarget) -> None:
    emu = consul_target.emu()
    emu.call(emu.emulator.go_down, "hang")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(TimeoutError):
            async with http.get(f"{emu.url}/v1/catalog/services", timeout=aiohttp.ClientTimeout(total=0.3)):
                pass
        held = asyncio.create_task(status_and_text(http, "GET", f"{emu.url}/v1/catalog/services"))
        done, _ = await asyncio.wait({held}, timeout=0.2)
        assert not done
        emu.call(emu.emulator.come_back)
        assert (await asyncio.wait_for(held, 5))[0] == 200


@pytest.mark.asyncio
async def test_catalog_controls_move_the_right_indexes(consul_target: ConsulTarget) -> None:
    emu = consul_target.emu()
    web = emu.add_service("web", 8080, node="n1", node_address="10.0.0.1", address="")
    db = emu.add_service("db", 5432, node="n2", node_address="10.0.0.2")
    async with aiohttp.ClientSession() as http:

        async def health(name: str, **params: str) -> tuple[int, list[dict[str, object]]]:
            async with http.get(f"{emu.url}/v1/health/service/{name}", params=params) as resp:
                return int(resp.headers["X-Consul-Index"]), await resp.json()

        web_index, entries = await health("web")
        assert entries[0]["Node"]["Address"] == "10.0.0.1"  # type: ignore[index]
        assert entries[0]["Service"]["Address"] == ""  # type: ignore[index]
        db_index, _ = await health("db")
        emu.set_node_status("n1", "critical")  # serfHealth of n1: every instance on it
        assert (await health("web", passing=""))[1] == []
        assert (await health("web"))[0] > web_index
        assert (await health("db"))[0] == db_index
        emu.set_node_status("n1", "passing")
        assert len((await health("web", passing=""))[1]) == 1
        emu.remove_service(db)
        assert (await health("db"))[1] == []
        emu.set_config_entry({"Kind": "service-defaults", "Name": "web", "Protocol": "http"})
        with pytest.raises(ValueError, match="the sum of all split weights must be 100"):
            emu.set_config_entry({"Kind": "service-splitter", "Name": "web", "Splits": [{"Weight": 10}]})
        emu.delete_config_entry("service-defaults", "web")
        async with http.get(f"{emu.url}/v1/config/service-defaults/web") as resp:
            assert resp.status == 404
    assert web.startswith("web-")
