"""``mesh.status()`` for a Consul mesh, ACL tokens, the Istio overlay (hot reload) and the ``--consul`` commands."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest

from meshlib.mesh import Mesh
from meshlib.testing.consul import AclToken, ConsulEmulator
from tests.conftest import BackendFactory
from tests.integration.cli_process import run_cli, serving_cli
from tests.integration.consul.conftest import names, served_by, until, until_status, url, web_v1_and_v2

pytestmark = pytest.mark.asyncio

CONFIG_WATCHES = {f"/v1/config/{kind}" for kind in
                  ("service-defaults", "proxy-defaults", "service-router", "service-splitter", "service-resolver")}


async def test_status_shows_every_watch(consul: ConsulEmulator, backend: BackendFactory) -> None:
    a = await backend("a")
    consul.add_service("web", a.port, service_id="web-a")
    mesh = Mesh.from_consul(consul.address)
    async with mesh:
        status = mesh.status()
        assert (status["source"], status["address"], status["datacenter"]) == ("consul", consul.url, "dc1")
        assert status["synced"] is True and status["connected"] is True
        assert status["services"] == 1
        assert status["version"].startswith("consul-") and status["version"] == status["state_version"]
        assert status["clusters"] >= 1
        assert set(status["watches"]) == {"/v1/catalog/services", "/v1/health/service/web", *CONFIG_WATCHES}
        for path, watch in status["watches"].items():
            assert watch["path"] == path
            assert watch["connected"] is True
            assert watch["last_index"] >= 1
            assert watch["known_leader"] is True
            assert isinstance(watch["last_contact_ms"], int)
            assert watch["last_error"] is None
            assert watch["updates"] == 1
        assert status["last_error"] == [] and status["config_problems"] == []
        # the admin view serves it as is, and its other pages work on a Consul mesh too
        runner = aiohttp.web.AppRunner(mesh.admin_app())
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/status") as response:
                    served = await response.json()
                async with http.get(f"http://127.0.0.1:{port}/clusters?format=text") as response:
                    clusters = await response.text()
        finally:
            await runner.cleanup()
        assert served["source"] == "consul" and set(served["watches"]) == set(status["watches"])
        assert "web.service.consul" in clusters
        # a second service appears in the catalog: its watch is added
        consul.add_service("api", a.port, service_id="api-a")
        await until(mesh, lambda: "/v1/health/service/api" in mesh.status()["watches"]
                    and served_by(mesh, "api") == {a.address})
        consul.remove_service("api-a")
        await until(mesh, lambda: "/v1/health/service/api" not in mesh.status()["watches"])


async def test_acl_token_is_sent_and_a_bad_one_is_reported(consul: ConsulEmulator, backend: BackendFactory) -> None:
    a = await backend("a")
    consul.add_service("web", a.port, service_id="web-a")
    consul.enable_acls([AclToken.management_token("s3cret")])
    mesh = Mesh.from_consul(consul.address, token="s3cret")
    async with mesh, mesh.session() as http:
        assert mesh.status()["synced"] is True
        assert await names(http, 3) == {"a": 3}
    denied = Mesh.from_consul(consul.address, token="wrong", initial_sync_timeout_s=0.5)
    async with denied:
        await until_status(denied, lambda st: any("403" in (w["last_error"] or "") for w in st["watches"].values()))
        status = denied.status()
        assert status["synced"] is False
        assert any("permission denied" in e for e in status["last_error"]), status["last_error"]


def overlay_yaml(subset: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web-overlay, namespace: default}}
spec:
  hosts: [web.service.consul]
  http:
  - route:
    - destination: {{host: web.service.consul, subset: {subset}}}
"""


async def test_istio_overlay_wins_for_its_host_and_hot_reloads(
    consul: ConsulEmulator, backend: BackendFactory, tmp_path: Path
) -> None:
    await web_v1_and_v2(consul, backend)  # Consul alone: DefaultSubset v1
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(overlay_yaml("v2"))
    mesh = Mesh.from_consul(consul.address, overlay=tmp_path, rng=random.Random(1))
    source_status = mesh.status()
    assert source_status["overlay"] == {"paths": [str(tmp_path)], "problems": []}
    async with mesh, mesh.session() as http:
        assert await names(http, 5) == {"v2": 5}
        assert mesh.explain("GET", url("web"))["route"]["virtual_service"] == "default/web-overlay"
        overlay.write_text(overlay_yaml("v1"))
        await until(mesh, lambda: mesh.explain("GET", url("web"))["destinations"][0]["subset"] == "v1")
        assert await names(http, 5) == {"v1": 5}
        overlay.write_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\n"
                           "spec: {hosts: [web.service.consul], http: [{route: [{destination: {}}]}]}\n")
        await until_status(mesh, lambda st: bool(st["overlay"]["problems"]))
        assert any("overlay.yaml" in p for p in mesh.status()["overlay"]["problems"])
        assert await names(http, 5) == {"v1": 5}  # the last good overlay stays
        overlay.unlink()  # no overlay: Consul's routing again
        await until(mesh, lambda: mesh.explain("GET", url("web"))["route"]["virtual_service"] != "default/web-overlay")
        assert await names(http, 5) == {"v1": 5}


async def test_validate_and_explain_against_live_consul(consul: ConsulEmulator, backend: BackendFactory) -> None:
    v1, _ = await web_v1_and_v2(consul, backend)
    code, out, err = await run_cli("validate", "--consul", consul.address)
    assert code == 0, err
    assert "ok: consul dc1: 1 service(s)" in out
    code, out, err = await run_cli("explain", "--consul", consul.address, "GET", url("web"))
    assert code == 0, err
    decision: dict[str, Any] = json.loads(out)
    assert decision["destinations"][0]["subset"] == "v1"
    assert decision["endpoints"] and v1.address in next(iter(decision["endpoints"].values()))
    consul.local_store.set_config_entry({  # stored without Consul's write-time checks
        "Kind": "service-splitter", "Name": "web", "CreateIndex": 0, "ModifyIndex": 0,
        "Splits": [{"Weight": 50, "ServiceSubset": "v1"}, {"Weight": 20, "ServiceSubset": "v2"}]})
    code, out, err = await run_cli("validate", "--consul", consul.address)
    assert code == 1
    assert "service-splitter/web" in out and "must be 100" in out, out
    code, out, err = await run_cli("validate", "--consul", "127.0.0.1:1")
    assert code == 1 and "cannot reach Consul" in err


async def test_control_plane_command_serves_consul(consul: ConsulEmulator, backend: BackendFactory) -> None:
    a = await backend("a")
    consul.add_service("web", a.port, service_id="web-a")
    async with serving_cli(
        "control-plane", "--consul", consul.address, "--port", "0", "--status-port", "0", stop_timeout_s=20
    ) as process:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            line = (await process.stdout.readline()).decode()
        assert "ADS on" in line, line
        status_url = line.split("status on ")[1].strip()
        async with aiohttp.ClientSession() as http, http.get(status_url) as response:
            status = await response.json()
        assert status["config_source"] == "consul"
        assert status["config_version"].startswith("consul-")
        assert status["consul"]["connected"] is True
    assert process.returncode == 0


async def test_explicit_services_skip_the_catalog_watch(consul: ConsulEmulator, backend: BackendFactory) -> None:
    a = await backend("a")
    consul.add_service("web", a.port, service_id="web-a")
    consul.add_service("api", a.port, service_id="api-a")
    mesh = Mesh.from_consul(consul.address, services=["web"], stale=False)
    async with mesh:
        assert set(mesh.status()["watches"]) == {"/v1/health/service/web", *CONFIG_WATCHES}
        assert served_by(mesh, "web") == {a.address}
        assert served_by(mesh, "api") == set()
        reads = [r for r in consul.requests if r.path == "/v1/health/service/web"]
        assert reads and not any("stale" in r.query for r in reads)  # stale=False: default consistency
