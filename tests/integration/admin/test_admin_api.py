"""The admin endpoints over a real loopback server, on the embedded bookinfo mesh."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import aiohttp
import pytest

import meshlib
from meshlib.admin import AdminServer, admin_app, run_admin, start_admin
from meshlib.admin.config_dump import match_summary, plain
from meshlib.config.model import LbKind, RouteMatch, StringMatch
from meshlib.mesh import default_config_path

from .conftest import EJECTED, REVIEWS, V2, get, get_json


@pytest.mark.asyncio
async def test_clusters_lists_clusters_hosts_and_health(admin: AdminServer, mesh: meshlib.Mesh) -> None:
    view = await get_json(admin, "/clusters")
    assert view["version"] == mesh.snapshot.version
    clusters = {c["name"]: c for c in view["clusters"]}
    assert set(clusters) == set(mesh.snapshot.clusters)
    for subset, port in (("v1", 19181), ("v2", 19182), ("v3", 19183)):
        cluster = clusters[f"outbound|9080|{subset}|{REVIEWS}"]
        assert [h["address"] for h in cluster["hosts"]] == [f"127.0.0.1:{port}"]
        assert cluster["lb"] == "LEAST_REQUEST"
        assert cluster["stats"]["upstream_rq_total"] == 0
    ejected = clusters[V2]["hosts"][0]
    assert ejected["health_flags"] == ["failed_outlier_check"]
    assert (ejected["healthy"], ejected["ejected"], ejected["ejection_count"]) == (False, True, 1)
    healthy = clusters[f"outbound|9080|v1|{REVIEWS}"]["hosts"][0]
    assert healthy["health_flags"] == ["healthy"]
    assert healthy["rq_active"] == 0
    assert healthy["labels"] == {"app": "reviews", "version": "v1"}
    # The unsubsetted cluster holds all three hosts; the shared host state shows there too.
    flags = {h["address"]: h["health_flags"] for h in clusters[f"outbound|9080||{REVIEWS}"]["hosts"]}
    assert flags == {
        "127.0.0.1:19181": ["healthy"], EJECTED: ["failed_outlier_check"], "127.0.0.1:19183": ["healthy"],
    }


@pytest.mark.asyncio
async def test_clusters_text_is_envoy_lines(admin: AdminServer, mesh: meshlib.Mesh) -> None:
    mesh.host_stats.get("127.0.0.1:19181", mesh.clock()).active_requests = 2
    status, content_type, text = await get(admin, "/clusters?format=text")
    assert status == 200
    assert content_type.startswith("text/plain")
    lines = set(text.splitlines())
    assert f"{V2}::{EJECTED}::health_flags::/failed_outlier_check" in lines
    assert f"outbound|9080|v1|{REVIEWS}::127.0.0.1:19181::health_flags::healthy" in lines
    assert f"outbound|9080|v1|{REVIEWS}::127.0.0.1:19181::rq_active::2" in lines
    assert f"outbound|9080|v3|{REVIEWS}::127.0.0.1:19183::weight::1" in lines
    assert f"outbound|9080|v3|{REVIEWS}::127.0.0.1:19183::zone::" in lines
    assert f"{V2}::default_priority::max_connections::4294967295" in lines
    assert all(line.count("::") >= 2 for line in lines)


@pytest.mark.asyncio
async def test_routes_show_rules_matches_and_weights(admin: AdminServer) -> None:
    view = await get_json(admin, "/routes")
    [config] = view["route_configs"]
    assert config["name"] == "9080"
    vhosts = {v["name"]: v for v in config["virtual_hosts"]}
    reviews = vhosts[f"{REVIEWS}:9080"]
    assert "reviews" in reviews["domains"]
    assert f"{REVIEWS}:9080" in reviews["domains"]
    jason, canary = reviews["routes"]
    assert (jason["virtual_service"], jason["rule"], jason["index"]) == ("default/reviews", "jason-sees-v2", 0)
    assert jason["match"] == ['headers[end-user] exact "jason"']
    assert [(d["subset"], d["weight"], d["percent"]) for d in jason["destinations"]] == [("v2", 100, 100.0)]
    assert jason["destinations"][0]["cluster"] == V2
    assert (canary["rule"], canary["match"]) == ("canary-v3", ["*"])
    assert [(d["subset"], d["weight"], d["percent"]) for d in canary["destinations"]] == [
        ("v1", 80, 80.0), ("v3", 20, 20.0),
    ]
    assert canary["timeout_s"] == 2.0
    assert canary["retries"] == {
        "attempts": 2, "per_try_timeout_s": 0.5, "retry_on": "gateway-error,connect-failure,refused-stream",
    }
    assert canary["fault"] is None
    assert canary["file"].endswith("bookinfo.yaml")
    assert canary["line"] > 0
    legacy = vhosts["ratings.default.svc.cluster.local:9080"]["routes"][0]
    assert legacy["match"] == ['uri prefix "/v0/ratings"']
    assert legacy["rewrite"]["uri"] == "/ratings"
    generated = vhosts["productpage.default.svc.cluster.local:9080"]["routes"][0]
    assert generated["virtual_service"] is None


@pytest.mark.asyncio
async def test_config_dump_has_version_status_and_envoy_sections(admin: AdminServer, mesh: meshlib.Mesh) -> None:
    dump = await get_json(admin, "/config_dump")
    version = mesh.snapshot.version
    assert dump["version"] == version
    assert dump["status"]["version"] == version
    assert dump["status"]["source"] == "files"
    assert dump["status"]["last_error"] == []
    types = [c["@type"].rsplit(".", 1)[-1] for c in dump["configs"]]
    assert types == ["ListenersConfigDump", "ClustersConfigDump", "RoutesConfigDump"]
    listeners, clusters, routes = dump["configs"]
    assert [entry["name"] for entry in listeners["dynamic_listeners"]] == ["0.0.0.0_9080"]
    by_name = {entry["cluster"]["name"]: entry for entry in clusters["dynamic_active_clusters"]}
    v2 = by_name[V2]
    assert v2["version_info"] == version
    [locality_group] = v2["cluster"]["load_assignment"]["endpoints"]
    address = locality_group["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert (address["address"], address["port_value"]) == ("127.0.0.1", 19182)
    assert v2["cluster"]["policy"]["lb"]["kind"] == "LEAST_REQUEST"
    [route_config] = routes["dynamic_route_configs"]
    assert route_config["version_info"] == version
    vhost_names = [v["name"] for v in route_config["route_config"]["virtual_hosts"]]
    assert f"{REVIEWS}:9080" in vhost_names
    assert {s["fqdn"] for s in dump["services"]} >= {REVIEWS}


@pytest.mark.asyncio
async def test_stats_is_prometheus_text(admin: AdminServer) -> None:
    status, content_type, text = await get(admin, "/stats?format=prometheus")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*\{([a-z_]+="(?:[^"\\]|\\.)*",?)*\} -?[0-9.e+Inf]+$')
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram")
            assert name not in typed, f"{name} declared twice"
            typed.add(name)
        else:
            assert sample.match(line), line
            assert line.split("{", 1)[0] in typed
    assert f'envoy_cluster_upstream_rq_total{{cluster_name="{V2}"}} 0' in text
    assert "# TYPE envoy_cluster_upstream_rq_active gauge" in text
    assert f"meshlib_host_ejected{{host=\"{EJECTED}\"}} 1" in text
    status, _, prometheus = await get(admin, "/stats/prometheus")
    assert (status, prometheus) == (200, text)


@pytest.mark.asyncio
async def test_stats_uses_the_given_renderer(mesh: meshlib.Mesh) -> None:
    server = await start_admin(mesh, port=0, stats_text=lambda: "# TYPE x counter\nx 1\n")
    try:
        status, _, text = await get(server, "/stats/prometheus")
    finally:
        await server.close()
    assert (status, text) == (200, "# TYPE x counter\nx 1\n")


@pytest.mark.asyncio
async def test_status_is_mesh_status(admin: AdminServer, mesh: meshlib.Mesh) -> None:
    assert await get_json(admin, "/status") == mesh.status()


@pytest.mark.asyncio
async def test_page_is_self_contained_html(admin: AdminServer) -> None:
    status, content_type, html = await get(admin, "/")
    assert status == 200
    assert content_type.startswith("text/html")
    assert "<script>" in html
    # Nothing from outside: no CDN, no external stylesheet, script or font (the network is closed).
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "@import" not in html
    assert "<link" not in html


@pytest.mark.asyncio
async def test_endpoints_follow_a_hot_reload(tmp_path: Path) -> None:
    config = tmp_path / "bookinfo.yaml"
    shutil.copy(default_config_path() / "bookinfo.yaml", config)
    mesh = meshlib.Mesh.from_files(tmp_path, poll_interval_s=0.02)
    async with mesh:
        server = await start_admin(mesh, port=0)
        try:
            before = await get_json(server, "/config_dump")
            text = config.read_text().replace("weight: 80", "weight: 50").replace("weight: 20", "weight: 50")
            config.write_text(text)
            await mesh.wait_for_reload(0)
            after = await get_json(server, "/config_dump")
            routes = await get_json(server, "/routes")
        finally:
            await server.close()
    assert after["version"] != before["version"]
    vhosts = {v["name"]: v for v in routes["route_configs"][0]["virtual_hosts"]}
    canary = vhosts[f"{REVIEWS}:9080"]["routes"][1]
    assert [d["weight"] for d in canary["destinations"]] == [50, 50]


@pytest.mark.asyncio
async def test_run_admin_serves_until_cancelled(mesh: meshlib.Mesh) -> None:
    ready: asyncio.Queue[AdminServer] = asyncio.Queue()
    task = asyncio.create_task(run_admin(mesh, port=0, on_ready=ready.put_nowait))
    server = await asyncio.wait_for(ready.get(), 5)
    assert server.port > 0
    assert (await get_json(server, "/status"))["version"] == mesh.snapshot.version
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(server, "/status")


def test_admin_app_routes() -> None:
    app = admin_app(meshlib.Mesh.from_files())
    paths = {route.resource.canonical for route in app.router.routes() if route.resource is not None}
    assert paths >= {"/", "/config_dump", "/clusters", "/routes", "/stats", "/status"}


@pytest.mark.asyncio
async def test_run_admin_returns_when_stop_is_set(mesh: meshlib.Mesh) -> None:
    stop = asyncio.Event()
    ready: asyncio.Queue[AdminServer] = asyncio.Queue()
    task = asyncio.create_task(run_admin(mesh, port=0, on_ready=ready.put_nowait, stop=stop))
    server = await asyncio.wait_for(ready.get(), 5)
    assert (await get(server, "/clusters?format=text"))[0] == 200
    stop.set()
    await asyncio.wait_for(task, 5)
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(server, "/status")


def test_match_summary_and_plain() -> None:
    match = RouteMatch(
        name="m", uri=StringMatch("regex", "/a/.*"), method=StringMatch("exact", "GET"),
        headers=(("x-a", StringMatch("present")),), without_headers=(("x-b", StringMatch("prefix", "z", True)),),
        query_params=(("q", StringMatch("exact", "1")),), port=9080,
    )
    assert match_summary(match) == (
        'm: uri regex "/a/.*" && method exact "GET" && headers[x-a] present && '
        '!headers[x-b] prefix "z" (ignore case) && query[q] exact "1" && port 9080'
    )
    assert match_summary(RouteMatch()) == "*"
    assert plain({"a": (1.5, float("inf")), "b": b"\xff", "c": LbKind.MAGLEV}) == {
        "a": [1.5, None], "b": "\ufffd", "c": "MAGLEV",
    }
