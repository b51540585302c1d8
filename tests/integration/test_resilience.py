"""Resilience against real misbehaving loopback servers (issue: resilience acceptance)."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

import meshlib
from meshlib.aiohttp.local_reply import LOCAL_REPLY_HEADER
from meshlib.resilience.deadline import deadline_scope
from tests.integration.misbehaving import (
    closing_upstream,
    http_upstream,
    mesh_yaml,
    unaccepting_port,
)
from tests.ports import refused_port

pytestmark = pytest.mark.asyncio
CLUSTER = "outbound|9080||svc.default.svc.cluster.local"


def make_mesh(tmp_path: Path, yaml: str, seed: int = 1) -> meshlib.Mesh:
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml)
    return meshlib.Mesh.from_files(path, rng=random.Random(seed))


async def test_retries_mask_a_bad_host_and_it_gets_ejected(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("good", "ok", release) as good, http_upstream("bad", "503", release) as bad:
        mesh = make_mesh(tmp_path, mesh_yaml(
            {"good": good.port, "bad": bad.port},
            dr_policy="    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s,"
                      " maxEjectionPercent: 50}",
            vs_rule="    retries: {attempts: 2, retryOn: 5xx}",
        ))
        async with mesh, mesh.session() as http:
            for _ in range(20):
                async with http.get("http://svc:9080/") as resp:
                    assert resp.status == 200  # every failure was retried onto the good host
            stats = mesh.stats()["clusters"][CLUSTER]
            assert f"127.0.0.1:{bad.port}" in stats["ejected_hosts"]
            assert stats["outlier_detection.ejections_enforced_total"] == 1
            assert stats["upstream_rq_retry"] == bad.hits
            hits_at_ejection = bad.hits
            for _ in range(10):
                async with http.get("http://svc:9080/") as resp:
                    assert resp.status == 200
        assert bad.hits == hits_at_ejection == 2  # ejected after 2 consecutive 5xx, never tried again
        assert good.hits == 30


async def test_slow_host_hits_per_try_timeout_and_retry_lands_elsewhere(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("slow", "block", release) as slow, http_upstream("fast", "ok", release) as fast:
        mesh = make_mesh(tmp_path, mesh_yaml(
            {"slow": slow.port, "fast": fast.port},
            vs_rule="    retries: {attempts: 2, perTryTimeout: 100ms, retryOn: 5xx}",
        ))
        async with mesh, mesh.session() as http:
            start = time.monotonic()
            for _ in range(4):
                async with http.get("http://svc:9080/") as resp:
                    assert await resp.text() == "fast"
            assert time.monotonic() - start < 4.0  # four requests, each at most one 100 ms per-try timeout
            stats = mesh.stats()["clusters"][CLUSTER]
        assert stats["upstream_rq_per_try_timeout"] == slow.hits >= 1
        # The retried attempt says so upstream, and carries the time budget it has.
        retried = [h for h in fast.headers if h["x-envoy-attempt-count"] == "2"]
        assert retried
        assert all(int(h["x-envoy-expected-rq-timeout-ms"]) <= 100 for h in fast.headers)


async def test_connect_failure_is_retried_by_istio_default_policy(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("ok", "ok", release) as ok:
        mesh = make_mesh(tmp_path, mesh_yaml({"down": refused_port(), "ok": ok.port}))
        async with mesh, mesh.session() as http:
            for _ in range(6):
                async with http.get("http://svc:9080/") as resp:
                    assert resp.status == 200
            stats = mesh.stats()["clusters"][CLUSTER]
        assert stats["upstream_rq_retry"] >= 1  # no `retries` on the route: Istio's default retries connect-failure


async def test_connection_closed_mid_request(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with closing_upstream("closer") as closer, http_upstream("ok", "ok", release) as ok:
        mesh = make_mesh(tmp_path, mesh_yaml(
            {"closer": closer.port, "ok": ok.port}, vs_rule="    retries: {attempts: 3, retryOn: reset}"
        ))
        async with mesh, mesh.session() as http:
            for _ in range(4):
                async with http.get("http://svc:9080/") as resp:
                    assert resp.status == 200
            # A POST may have reached the server: a reset is not retried for it.
            posts = [await _status(http.post("http://svc:9080/", data=b"x")) for _ in range(4)]
        assert 503 in posts
        assert closer.hits >= 3


async def _status(request: aiohttp.client._RequestContextManager) -> int:
    async with request as resp:
        return resp.status


async def test_overflow_answers_immediately(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("blocked", "block", release) as blocked:
        mesh = make_mesh(tmp_path, mesh_yaml(
            {"blocked": blocked.port}, dr_policy="    connectionPool: {http: {http2MaxRequests: 1}}"
        ))
        async with mesh, mesh.session() as http:
            first = asyncio.create_task(_status(http.get("http://svc:9080/")))
            await blocked.arrived.wait()  # the first request now occupies the only slot
            async with asyncio.timeout(1.0), http.get("http://svc:9080/") as resp:
                assert resp.status == 503
                assert resp.headers["x-envoy-overloaded"] == "true"
                assert resp.headers[LOCAL_REPLY_HEADER] == "UO"
            release.set()
            assert await first == 200
            stats = mesh.stats()["clusters"][CLUSTER]
        assert stats["upstream_rq_pending_overflow"] == 1
        assert blocked.hits == 1  # the overflowed request never reached the server


async def test_route_timeout_bounds_total_time(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("blocked", "block", release) as blocked:
        mesh = make_mesh(tmp_path, mesh_yaml(
            {"blocked": blocked.port},
            vs_rule="    timeout: 300ms\n    retries: {attempts: 5, perTryTimeout: 100ms, retryOn: 5xx}",
        ))
        async with mesh, mesh.session() as http:
            start = time.monotonic()
            async with http.get("http://svc:9080/") as resp:
                elapsed = time.monotonic() - start
                assert resp.status == 504
                assert resp.headers[LOCAL_REPLY_HEADER] == "UT"
            stats = mesh.stats()["clusters"][CLUSTER]
        assert 0.29 <= elapsed < 2.0  # bounded by the 300 ms route timeout, not 5 × 100 ms tries + backoff
        assert stats["upstream_rq_timeout"] == 1


async def test_passed_deadline_fails_locally_without_sending(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("ok", "ok", release) as ok:
        mesh = make_mesh(tmp_path, mesh_yaml({"ok": ok.port}))
        async with mesh, mesh.session() as http:
            with deadline_scope(mesh.clock() - 0.001):
                async with http.get("http://svc:9080/") as resp:
                    assert resp.status == 504
        assert ok.hits == 0


async def test_inbound_deadline_bounds_outbound_call(tmp_path: Path) -> None:
    """A handler behind server_middleware inherits its caller's deadline for its own calls."""
    release = asyncio.Event()
    async with http_upstream("blocked", "block", release) as blocked:
        mesh = make_mesh(tmp_path, mesh_yaml({"blocked": blocked.port}))
        async with mesh, mesh.session() as http:

            async def frontend(request: web.Request) -> web.Response:
                async with http.get("http://svc:9080/") as resp:
                    return web.Response(status=resp.status, text="frontend")

            app = web.Application(middlewares=[mesh.server_middleware()])
            app.router.add_get("/", frontend)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            try:
                async with aiohttp.ClientSession() as plain:
                    start = time.monotonic()
                    async with plain.get(f"http://127.0.0.1:{port}/", headers={"grpc-timeout": "200m"}) as resp:
                        assert resp.status == 504
                    assert time.monotonic() - start < 1.0
            finally:
                await runner.cleanup()
        sent = blocked.headers[0]
        assert 0 < int(sent["x-envoy-expected-rq-timeout-ms"]) <= 200


async def test_fault_abort_hits_configured_share_and_never_reaches_server(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("ok", "ok", release) as ok:
        mesh = make_mesh(tmp_path, mesh_yaml(
            {"ok": ok.port},
            vs_rule="    fault: {abort: {httpStatus: 503, percentage: {value: 30}}}\n"
                    "    retries: {attempts: 3, retryOn: 5xx}",
        ), seed=3)
        aborted = 0
        async with mesh, mesh.session() as http:
            for _ in range(400):
                async with http.get("http://svc:9080/") as resp:
                    if resp.status == 503:
                        assert resp.headers[LOCAL_REPLY_HEADER] == "FI"
                        aborted += 1
            stats = mesh.stats()["clusters"][CLUSTER]
        assert abs(aborted - 120) <= 37  # 400 × 30%, 4σ (σ ≈ 9.2)
        assert ok.hits == 400 - aborted  # an abort never reaches the server
        assert stats["upstream_rq_retry"] == 0  # and is never retried


async def test_local_rate_limit_answers_429(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("ok", "ok", release) as ok:
        annotation = (
            "  annotations:\n"
            "    meshlib.io/local-rate-limit: '{\"maxTokens\": 3, \"tokensPerFill\": 1, \"fillInterval\": \"1h\"}'"
        )
        mesh = make_mesh(tmp_path, mesh_yaml({"ok": ok.port}, vs_annotations=annotation))
        async with mesh, mesh.session() as http:
            statuses = [await _status(http.get("http://svc:9080/")) for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        assert ok.hits == 3


async def test_breaker_guards_any_call(tmp_path: Path) -> None:
    mesh = make_mesh(tmp_path, mesh_yaml({"x": refused_port()}))
    calls = 0

    @mesh.breaker("database", fail_max=2, reset_timeout_s=60)
    async def query() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("database down")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            await query()
    with pytest.raises(meshlib.MeshError):
        await query()  # open: rejected without calling
    assert calls == 2
    assert mesh.stats()["breakers"]["database"]["state"] == "open"


async def test_connect_timeout_from_destination_rule(tmp_path: Path) -> None:
    """tcp.connectTimeout bounds connecting; a host that never accepts counts as a connect failure."""
    async with unaccepting_port() as port:
        mesh = make_mesh(tmp_path, mesh_yaml(
            {"stuck": port}, dr_policy="    connectionPool: {tcp: {connectTimeout: 200ms}}",
            vs_rule="    retries: {attempts: 0}",
        ))
        async with mesh, mesh.session() as http:
            start = time.monotonic()
            async with http.get("http://svc:9080/") as resp:
                elapsed = time.monotonic() - start
                assert resp.status == 503
                assert resp.headers[LOCAL_REPLY_HEADER] == "UF"
    assert 0.15 <= elapsed < 2.0
    assert mesh.stats()["clusters"][CLUSTER]["upstream_cx_connect_fail"] == 1


async def test_mirror_sends_a_shadow_copy(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("primary", "ok", release) as primary, http_upstream("shadow", "ok", release) as shadow:
        yaml = mesh_yaml({"primary": primary.port, "shadow": shadow.port}).replace(
            "  host: svc\n", "  host: svc\n  subsets:\n  - {name: p, labels: {host: primary}}\n"
            "  - {name: s, labels: {host: shadow}}\n", 1,
        ).replace(
            "  - route: [{destination: {host: svc}}]",
            "  - route: [{destination: {host: svc, subset: p}}]\n"
            "    mirror: {host: svc, subset: s}\n    mirrorPercentage: {value: 100}",
        )
        mesh = make_mesh(tmp_path, yaml)
        async with mesh, mesh.session() as http:
            async with http.post("http://svc:9080/orders?id=7", data=b"payload") as resp:
                assert await resp.text() == "primary"  # the caller sees only the primary's answer
            await asyncio.wait_for(shadow.arrived.wait(), 5)
        assert (primary.hits, shadow.hits) == (1, 1)
        assert shadow.headers[0]["Host"] == "svc-shadow:9080"


async def test_connection_limit_queues_pending_and_overflows_beyond(tmp_path: Path) -> None:
    """maxConnections busy → the next request waits as pending; a full pending queue → 503 at once."""
    release = asyncio.Event()
    async with http_upstream("blocked", "block", release) as blocked:
        mesh = make_mesh(tmp_path, mesh_yaml(
            {"blocked": blocked.port},
            dr_policy="    connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}",
        ))
        async with mesh, mesh.session() as http:
            first = asyncio.create_task(_status(http.get("http://svc:9080/a")))
            await blocked.arrived.wait()
            second = asyncio.create_task(_status(http.get("http://svc:9080/b")))  # waits as pending
            for _ in range(1000):  # yield (no timer) until the second request sits in the pending queue
                if mesh.stats()["clusters"][CLUSTER]["upstream_rq_pending_active"] == 1:
                    break
                await asyncio.sleep(0)
            else:
                pytest.fail("the second request never became pending")
            async with asyncio.timeout(1.0), http.get("http://svc:9080/c") as resp:
                assert resp.status == 503
                assert resp.headers["x-envoy-overloaded"] == "true"
            assert blocked.hits == 1  # the pending request has not been sent yet
            release.set()
            assert (await first, await second) == (200, 200)
            stats = mesh.stats()["clusters"][CLUSTER]
        assert stats["upstream_rq_pending_overflow"] == 1
        assert stats["upstream_cx_overflow"] >= 2
        assert blocked.hits == 2


async def test_max_requests_per_connection_one_disables_keepalive(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("ok", "ok", release) as ok:
        mesh = make_mesh(tmp_path, mesh_yaml(
            {"ok": ok.port}, dr_policy="    connectionPool: {http: {maxRequestsPerConnection: 1}}"
        ))
        async with mesh, mesh.session() as http:
            for _ in range(3):
                assert await _status(http.get("http://svc:9080/")) == 200
        assert [h.get("Connection") for h in ok.headers] == ["close"] * 3


async def test_istio_retry_budget_replaces_max_retries(tmp_path: Path) -> None:
    budget = "    retryBudget: {percent: 50, minRetryConcurrency: 7}"
    mesh = make_mesh(tmp_path, mesh_yaml({"x": refused_port()}, dr_policy=budget))
    stats = mesh.stats()["clusters"][CLUSTER]
    assert stats["remaining_retries"] == 7  # max(7, 50% of 0 active) — Envoy's retry_budget arithmetic
