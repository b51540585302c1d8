"""What Envoy users expect of an admin port: /stats forms and filters, /ready, /server_info, /help, a page
readable without JavaScript."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

import meshlib
from meshlib.admin import AdminServer, start_admin
from meshlib.admin.app import ENDPOINTS
from meshlib.tracing.record import OutboundRecord

from .conftest import EJECTED, REVIEWS, V2, get, get_json

pytestmark = pytest.mark.asyncio


def record_to_reviews_v1() -> OutboundRecord:
    return OutboundRecord(
        start_time_unix_ns=0, duration_s=0.004, method="GET", scheme="http", authority="reviews:9080",
        path="/reviews/1", status=200, response_flags="-", upstream_cluster=f"outbound|9080|v1|{REVIEWS}",
        destination_service=REVIEWS, destination_subset="v1", response_bytes=120,
    )


async def test_stats_text_is_envoys_name_value_form(admin: AdminServer, mesh: meshlib.Mesh) -> None:
    status, content_type, text = await get(admin, "/stats")
    assert (status, content_type) == (200, "text/plain; charset=utf-8")
    lines = text.splitlines()
    assert f"cluster.{V2}.upstream_rq_total: 0" in lines
    assert f"cluster.{V2}.circuit_breakers.default.rq_open: 0" in lines
    assert all(": " in line for line in lines)
    names = [line.split(": ", 1)[0] for line in lines]
    assert names == sorted(names)  # no Istio metrics yet: cluster stats only, sorted

    mesh.enable_metrics(meter_provider=None).outbound(record_to_reviews_v1())
    _, _, text = await get(admin, "/stats")
    [requests] = [line for line in text.splitlines() if line.startswith("istio_requests_total{")]
    assert f'destination_service="{REVIEWS}"' in requests and requests.endswith(": 1")
    [duration] = [line for line in text.splitlines() if line.startswith("istio_request_duration_milliseconds{")]
    assert duration.endswith(": count=1 sum=4")


async def test_stats_json_filter_and_usedonly(admin: AdminServer, mesh: meshlib.Mesh) -> None:
    mesh.host_stats.get(EJECTED, mesh.clock())
    view = await get_json(admin, "/stats?format=json&filter=" + "v2.*upstream_rq_(total|retry)$")
    assert view == {"stats": [
        {"name": f"cluster.{V2}.upstream_rq_retry", "value": 0},
        {"name": f"cluster.{V2}.upstream_rq_total", "value": 0},
    ]}
    used = await get_json(admin, "/stats?format=json&usedonly&filter=circuit_breakers")
    # Every remaining_* gauge is non-zero (the default limits); every *_open gauge is 0 and dropped.
    assert used["stats"] and all(".remaining_" in stat["name"] for stat in used["stats"])
    _, _, text = await get(admin, "/stats?filter=ejections_active")
    assert f"cluster.{V2}.outlier_detection.ejections_active: 0" in text.splitlines()


async def test_stats_prometheus_form_and_its_filter(admin: AdminServer) -> None:
    status, content_type, text = await get(admin, "/stats?format=prometheus&filter=^envoy_cluster_upstream_rq_total$")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert families == {"envoy_cluster_upstream_rq_total"}
    assert f'envoy_cluster_upstream_rq_total{{cluster_name="{V2}"}} 0' in text
    _, _, same = await get(admin, "/stats/prometheus?filter=^envoy_cluster_upstream_rq_total$")
    assert same == text


@pytest.mark.parametrize("query", ["filter=(unclosed", "filter=" + "a" * 2000, "format=xml"])
async def test_bad_stats_queries_are_400_with_the_reason(admin: AdminServer, query: str) -> None:
    status, _, text = await get(admin, "/stats?" + query)
    assert status == 400
    assert text.strip() and "Traceback" not in text
    assert ("RE2" in text or "at most 1024" in text) if query.startswith("filter") else "format must be" in text


async def test_ready_is_live_once_configured(admin: AdminServer) -> None:
    assert (await get(admin, "/ready"))[0::2] == (200, "LIVE\n")


async def test_ready_is_initializing_until_an_xds_mesh_has_configuration() -> None:
    pytest.importorskip("envoy.config.core.v3.base_pb2")
    mesh = meshlib.Mesh.from_xds("127.0.0.1:1", node_id="waiting-1")  # nothing listens: never configured
    server = await start_admin(mesh, port=0)
    try:
        assert (await get(server, "/ready"))[0::2] == (503, "INITIALIZING\n")
        assert (await get_json(server, "/server_info"))["state"] == "INITIALIZING"
    finally:
        await server.close()


async def test_server_info(admin: AdminServer, mesh: meshlib.Mesh) -> None:
    info = await get_json(admin, "/server_info")
    assert info["version"].startswith(f"meshlib/{meshlib.__version__} python/3.")
    assert info["state"] == "LIVE"
    assert info["uptime_current_epoch"].endswith("s")
    assert info["node"]["metadata"]["NAMESPACE"] == "default"
    assert info["config"] == {"source": "files", "version": mesh.snapshot.version}


async def test_help_lists_every_endpoint(admin: AdminServer) -> None:
    status, _, text = await get(admin, "/help")
    assert status == 200
    assert text.splitlines()[0] == "admin commands are:"
    for path, _ in ENDPOINTS:
        assert f"  {path}: " in text
        if path != "/help":
            assert (await get(admin, path))[0] in (200, 503), path


class NoScriptText(HTMLParser):
    """The text inside <noscript>, per table cell, as a browser without JavaScript shows it."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.cells: list[str] = []
        self.in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "noscript":
            self.depth += 1
        elif tag == "td" and self.depth:
            self.in_cell = True
            self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "noscript":
            self.depth -= 1
        elif tag == "td":
            self.in_cell = False

    def handle_data(self, data: str) -> None:
        if self.in_cell and self.depth:
            self.cells[-1] += data


async def test_page_is_readable_without_javascript(admin: AdminServer, mesh: meshlib.Mesh) -> None:
    status, content_type, html = await get(admin, "/")
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    parser = NoScriptText()
    parser.feed(html)
    cells = parser.cells
    assert mesh.snapshot.version in cells
    assert V2 in cells  # every cluster, with its hosts and their health
    assert f"  {EJECTED}" in cells and "ejected (failed_outlier_check)" in cells
    assert "reviews.default.svc.cluster.local/v1 80%, reviews.default.svc.cluster.local/v3 20%" in cells
    assert "default/reviews / jason-sees-v2" in cells
    assert 'headers[end-user] exact "jason"' in cells
