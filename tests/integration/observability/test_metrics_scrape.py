"""Known traffic through the mesh, then a Prometheus scrape over HTTP: Istio names, labels and values."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

import meshlib
from meshlib.tracing.prometheus import prometheus_handler
from tests.integration.misbehaving import http_upstream, mesh_yaml
from tests.ports import refused_port

pytestmark = pytest.mark.asyncio
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, line
        labels = dict(LABEL.findall(match["labels"] or ""))
        samples.append((match["name"], labels, float(match["value"])))
    return samples


def value(samples: list[tuple[str, dict[str, str], float]], name: str, **want: str) -> float:
    found = [v for n, labels, v in samples if n == name and all(labels.get(k) == w for k, w in want.items())]
    assert len(found) == 1, (name, want, found)
    return found[0]


async def test_scraped_metrics_have_istio_names_labels_and_values(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("ok", "ok", release) as ok:
        yaml = mesh_yaml(
            {"ok": ok.port, "down": refused_port()},
            dr_policy="  subsets:\n  - {name: v1, labels: {host: ok}}\n  - {name: v0, labels: {host: down}}",
            vs_rule="",
        ).replace("  - route: [{destination: {host: svc}}]", (
            "  - match: [{headers: {end-user: {exact: jason}}}]\n"
            "    name: jason\n"
            "    route: [{destination: {host: svc, subset: v1}}]\n"
            "  - name: broken\n"
            "    retries: {attempts: 1, retryOn: connect-failure}\n"
            "    route: [{destination: {host: svc, subset: v0}}]"
        ))
        (tmp_path / "mesh.yaml").write_text(yaml.replace("    trafficPolicy:\n    loadBalancer", "    loadBalancer"))
        mesh = meshlib.Mesh.from_files(tmp_path / "mesh.yaml", labels={"app": "productpage", "version": "v1"})
        mesh.enable_metrics()
        async with mesh, mesh.session() as http:
            for _ in range(3):
                async with http.get("http://svc:9080/r", headers={"end-user": "jason"}) as resp:
                    assert resp.status == 200
            async with http.get("http://svc:9080/r") as resp:
                assert resp.status == 503  # subset v0's only host refuses connections, retried once

            app = web.Application()
            app.router.add_get("/stats/prometheus", prometheus_handler(mesh.prometheus_text))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            try:
                async with aiohttp.ClientSession() as plain, plain.get(
                    f"http://127.0.0.1:{port}/stats/prometheus"
                ) as resp:
                    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
                    samples = parse(await resp.text())
            finally:
                await runner.cleanup()

    fqdn = "svc.default.svc.cluster.local"
    common = {"reporter": "source", "source_app": "productpage", "source_version": "v1", "destination_service": fqdn}
    assert value(samples, "istio_requests_total", **common, destination_version="v1", response_code="200",
                 response_flags="-") == 3
    assert value(samples, "istio_requests_total", **common, destination_version="v0", response_code="503",
                 response_flags="UF,URX") == 1
    assert value(samples, "istio_request_duration_milliseconds_count", **common, destination_version="v1",
                 response_code="200") == 3
    # The resilience counters are exported with Envoy's names.
    assert value(samples, "envoy_cluster_upstream_rq_retry", cluster_name=f"outbound|9080|v0|{fqdn}") == 1
    # Both the first attempt and its retry failed to connect: Envoy counts each failed connection.
    assert value(samples, "envoy_cluster_upstream_cx_connect_fail", cluster_name=f"outbound|9080|v0|{fqdn}") == 2
