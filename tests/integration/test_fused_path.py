"""The fused happy path (meshlib.aiohttp.fused) against the full runner: same outcomes, same stats.

Each scenario runs twice on fresh meshes and fresh loopback upstreams — once as
shipped (plain requests take the fused path) and once with the fused path
switched off (every request takes ``route_request`` and ``UpstreamRunner.run``)
— and compares what the caller got, what the upstreams received and the
cluster's counters. Also: the routing memo's bound and its invalidation by a
configuration swap, and aiohttp's total timeout kept by meshlib's queue.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import meshlib
from meshlib.aiohttp import fused as fused_module
from meshlib.aiohttp import total_timeout
from meshlib.aiohttp.fused import FusedPath
from meshlib.aiohttp.local_reply import LOCAL_REPLY_HEADER
from tests.integration.misbehaving import Upstream, http_upstream
from tests.ports import free_port

pytestmark = pytest.mark.asyncio

# Counters that depend on the clock, not on what happened.
_TIMING_KEYS = {"retry_budget_balance", "ejected_hosts"}
_HINTS = ("x-envoy-attempt-count", "x-envoy-expected-rq-timeout-ms")


def _mesh_yaml(ports: dict[str, int], rule: str, *, cluster_policy: str = "") -> str:
    endpoints = "\n".join(
        f"  - {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{version: {name}}}}}"
        for name, port in ports.items()
    )
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints:
{endpoints}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {{consecutive5xxErrors: 3, interval: 10s, baseEjectionTime: 30s}}
{cluster_policy}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: reviews}}}}]
    headers: {{request: {{set: {{x-who: jason}}}}, response: {{add: {{x-routed: jason}}}}}}
  - route: [{{destination: {{host: reviews}}}}]
{rule}
"""


def _switch_off_fused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FusedPath, "lookup", lambda self, req: None)


def _count_fused(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-element list counting requests the fused path took."""
    taken = [0]
    original = FusedPath.request

    def request(self: FusedPath, *args: Any) -> Awaitable[aiohttp.ClientResponse]:
        taken[0] += 1
        return original(self, *args)

    monkeypatch.setattr(FusedPath, "request", request)
    return taken


Scenario = Callable[[aiohttp.ClientSession], Awaitable[list[tuple[object, ...]]]]


async def _run(tmp_path: Path, yaml: str, scenario: Scenario) -> tuple[list[tuple[object, ...]], dict[str, Any]]:
    config = tmp_path / "mesh.yaml"
    config.write_text(yaml)
    mesh = meshlib.Mesh.from_files(config, rng=random.Random(7))
    async with mesh, mesh.session() as http:
        seen = await scenario(http)
        stats = mesh.stats()
    clusters = {
        name: {k: v for k, v in counters.items() if k not in _TIMING_KEYS}
        for name, counters in stats["clusters"].items()
    }
    return seen, clusters


async def _get_all(
    http: aiohttp.ClientSession, n: int, headers: dict[str, str] | None = None
) -> list[tuple[object, ...]]:
    seen: list[tuple[object, ...]] = []
    for i in range(n):
        async with http.get(f"http://reviews:9080/r/{i % 3}", headers=headers) as resp:
            seen.append((resp.status, await resp.text(), resp.headers.get(LOCAL_REPLY_HEADER),
                         resp.headers.get("x-routed")))
    return seen


def _upstream_view(upstream: Upstream) -> list[tuple[object, ...]]:
    return [(h.get("x-who"), *(h.get(name) for name in _HINTS), "x-request-id" in h) for h in upstream.headers]


@asynccontextmanager
async def _upstreams(*behaviours: str) -> AsyncIterator[list[Upstream]]:
    release = asyncio.Event()
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(http_upstream(f"u{i}", b, release)) for i, b in enumerate(behaviours)]


async def _both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, behaviours: tuple[str, ...], rule: str, scenario: Scenario,
    *, extra_ports: dict[str, int] | None = None,
) -> tuple[tuple[Any, ...], tuple[Any, ...], int]:
    """Run ``scenario`` fused, then with the fused path off; returns both results and the fused count."""
    results: list[tuple[Any, ...]] = []
    taken = _count_fused(monkeypatch)
    for fused_on in (True, False):
        if not fused_on:
            _switch_off_fused(monkeypatch)
        async with _upstreams(*behaviours) as ups:
            ports = {u.name: u.port for u in ups} | (extra_ports or {})
            out_dir = tmp_path / ("fused" if fused_on else "full")
            out_dir.mkdir()
            seen, clusters = await _run(out_dir, _mesh_yaml(ports, rule), scenario)
            results.append((seen, clusters, [_upstream_view(u) for u in ups]))
    fused_count = taken[0]
    return results[0], results[1], fused_count


async def test_plain_requests_same_outcome_and_stats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rule = "    retries: {attempts: 2, perTryTimeout: 1s, retryOn: 'gateway-error,connect-failure'}"

    async def scenario(http: aiohttp.ClientSession) -> list[tuple[object, ...]]:
        return await _get_all(http, 6) + await _get_all(http, 3, {"end-user": "jason"})

    fused, full, taken = await _both(tmp_path, monkeypatch, ("ok",), rule, scenario)
    assert taken == 9  # every request took the fused path in the first run, none in the second
    assert fused == full
    seen, clusters, upstreams = fused
    assert [s[0] for s in seen] == [200] * 9
    assert [s[3] for s in seen] == [None] * 6 + ["jason"] * 3  # response header ops
    cluster = clusters["outbound|9080||reviews.default.svc.cluster.local"]
    assert cluster["upstream_rq_total"] == cluster["upstream_rq_2xx"] == cluster["upstream_rq_completed"] == 9
    # The hints (attempt 1, the per-try timeout) and the request header ops reached the upstream.
    assert upstreams[0][0] == (None, "1", "1000", True)
    assert upstreams[0][-1] == ("jason", "1", None, True)  # the jason route has no per-try timeout


async def test_retried_5xx_handed_to_the_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two hosts, one always 503: attempt 1 on it is retriable, so the runner carries on.
    rule = "    retries: {attempts: 2, retryOn: 5xx}"

    async def scenario(http: aiohttp.ClientSession) -> list[tuple[object, ...]]:
        return await _get_all(http, 8)

    fused, full, taken = await _both(tmp_path, monkeypatch, ("503", "ok"), rule, scenario)
    assert taken == 8
    assert fused == full
    _, clusters, _ = fused
    cluster = clusters["outbound|9080||reviews.default.svc.cluster.local"]
    assert cluster["upstream_rq_retry"] > 0
    assert cluster["upstream_rq_total"] == 8


async def test_final_5xx_and_connect_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No retry policy: a 503 is final on the fused path; a refused connection is handed over (503 UF).
    rule = "    retries: {attempts: 0}"

    async def scenario(http: aiohttp.ClientSession) -> list[tuple[object, ...]]:
        return await _get_all(http, 6)

    fused, full, taken = await _both(
        tmp_path, monkeypatch, ("503",), rule, scenario, extra_ports={"gone": free_port()}
    )
    assert taken == 6
    assert fused == full
    seen, clusters, _ = fused
    assert {s[2] for s in seen} == {None, "UF"}  # upstream 503s and local connect failures
    cluster = clusters["outbound|9080||reviews.default.svc.cluster.local"]
    assert cluster["upstream_cx_connect_fail"] > 0


async def test_per_try_timeout_then_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rule = "    retries: {attempts: 1, perTryTimeout: 50ms, retryOn: 5xx}"

    async def scenario(http: aiohttp.ClientSession) -> list[tuple[object, ...]]:
        return await _get_all(http, 2)

    fused, full, taken = await _both(tmp_path, monkeypatch, ("block",), rule, scenario)
    assert taken == 2
    assert fused == full
    seen, clusters, _ = fused
    assert [(s[0], s[2]) for s in seen] == [(504, "UT")] * 2
    cluster = clusters["outbound|9080||reviews.default.svc.cluster.local"]
    assert cluster["upstream_rq_per_try_timeout"] == 4  # attempt 1 and its retry, twice


async def test_memo_is_bounded_and_dropped_on_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fused_module, "MEMO_LIMIT", 8)
    paths: list[FusedPath] = []
    original_init = FusedPath.__init__

    def init(self: FusedPath, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        paths.append(self)

    monkeypatch.setattr(FusedPath, "__init__", init)
    async with _upstreams("ok", "ok") as (first, second):
        config = tmp_path / "mesh.yaml"
        config.write_text(_mesh_yaml({"v1": first.port}, ""))
        mesh = meshlib.Mesh.from_files(config, poll_interval_s=0.05)
        async with mesh, mesh.session() as http:
            (memo,) = paths
            sizes = []
            for i in range(50):  # 50 request shapes (distinct paths, hostile-style)
                async with http.get(f"http://reviews:9080/item/{i}") as resp:
                    assert resp.status == 200
                sizes.append(len(memo))
            assert max(sizes) <= 8
            assert first.hits == 50
            size = len(memo)
            async with http.get("http://reviews:9080/" + "x" * 600) as resp:  # too long to memoise
                assert resp.status == 200
            assert len(memo) == size
            # The same shape again, then a new configuration sending it elsewhere: the memo must not answer.
            async with http.get("http://reviews:9080/item/49") as resp:
                assert resp.status == 200
            attempts = mesh.reload_attempts
            config.write_text(_mesh_yaml({"v2": second.port}, ""))
            await mesh.wait_for_reload(attempts)
            async with http.get("http://reviews:9080/item/49") as resp:
                assert resp.status == 200
            assert (first.hits, second.hits) == (52, 1)
            assert len(memo) == 1  # dropped with the old configuration, then refilled


async def test_params_and_host_headers_share_a_site_and_its_memo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``params=`` gives every request a new URL object: it is found by its parts, not memoised anew; and a
    request to another URL with the same Host header and path is the same shape."""
    taken = _count_fused(monkeypatch)
    lookups: list[int] = []
    original = FusedPath.lookup

    def lookup(self: FusedPath, req: Any) -> Any:
        found = original(self, req)
        lookups.append(len(self))
        return found

    monkeypatch.setattr(FusedPath, "lookup", lookup)
    async with _upstreams("ok", "ok") as (first, _second):
        config = tmp_path / "mesh.yaml"
        config.write_text(_mesh_yaml({"v1": first.port}, ""))
        mesh = meshlib.Mesh.from_files(config)
        async with mesh, mesh.session() as http:
            for i in range(20):
                async with http.get("http://reviews:9080/item", params={"page": str(i)}) as resp:
                    assert resp.status == 200
                async with http.get("http://elsewhere:9080/item", headers={"Host": "reviews:9080"}) as resp:
                    assert resp.status == 200
    assert taken[0] == 40 and first.hits == 40
    # aiohttp puts the URL's authority in the Host header: both are GET reviews:9080/item, one memoised shape.
    assert lookups == [1] * 40


async def test_query_routes_are_not_memoised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = _count_fused(monkeypatch)
    async with _upstreams("ok", "ok") as (first, second):
        yaml = _mesh_yaml({"v1": first.port}, "").replace(
            "  - name: jason\n",
            "  - match: [{queryParams: {v: {exact: '2'}}}]\n    route: [{destination: {host: other}}]\n"
            "  - name: jason\n",
        ) + f"""---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: other, namespace: default}}
spec:
  hosts: [other.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {second.port}}}}}]
"""
        config = tmp_path / "mesh.yaml"
        config.write_text(yaml)
        mesh = meshlib.Mesh.from_files(config)
        async with mesh, mesh.session() as http:
            for query in ("?v=1", "?v=2", "?v=1", "?v=2"):
                async with http.get(f"http://reviews:9080/r{query}") as resp:
                    assert resp.status == 200
    assert (first.hits, second.hits) == (2, 2)
    assert taken[0] == 0


async def test_suppress_envoy_headers(tmp_path: Path) -> None:
    async with _upstreams("ok") as (upstream,):
        config = tmp_path / "mesh.yaml"
        config.write_text(_mesh_yaml({"v1": upstream.port}, "    retries: {attempts: 2, perTryTimeout: 1s}"))
        mesh = meshlib.Mesh.from_files(config)
        async with mesh:
            for suppress in (True, False):
                async with mesh.session(suppress_envoy_headers=suppress) as http, http.get(
                    "http://reviews:9080/r"
                ) as resp:
                    assert resp.status == 200
    assert [tuple(h.get(name) for name in _HINTS) for h in upstream.headers] == [(None, None), ("1", "1000")]


async def test_total_timeout_is_meshlib_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp's total timeout, kept by meshlib's queue: the request phase and the body phase."""
    monkeypatch.setattr(total_timeout, "TOTAL_S", 0.2)
    release = asyncio.Event()
    body_started = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        if request.path == "/headers":
            await release.wait()  # never answers while the test runs
            return web.Response(text="late")
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first part")
        body_started.set()
        await release.wait()
        return response

    app = web.Application()
    app.router.add_get("/{tail:.*}", stall)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        config = tmp_path / "mesh.yaml"
        config.write_text(_mesh_yaml({"v1": port}, ""))
        mesh = meshlib.Mesh.from_files(config)
        async with mesh, mesh.session() as http:
            with pytest.raises(asyncio.TimeoutError):
                await http.get("http://reviews:9080/headers")
            async with http.get("http://reviews:9080/body") as resp:
                assert resp.status == 200
                with pytest.raises(aiohttp.ServerTimeoutError, match="total timeout"):
                    await resp.read()
        # A caller's own timeout= is aiohttp's, as before (meshlib's total is now an hour): aiohttp's timer
        # ends the attempt, which the mesh reports as its own timeout (504 UT), as it always has.
        monkeypatch.setattr(total_timeout, "TOTAL_S", 3600.0)
        mesh = meshlib.Mesh.from_files(config)
        async with mesh, mesh.session() as http:
            timeout = aiohttp.ClientTimeout(total=0.05)
            async with asyncio.timeout(10), http.get("http://reviews:9080/headers", timeout=timeout) as resp:
                assert (resp.status, resp.headers[LOCAL_REPLY_HEADER]) == (504, "UT")
    finally:
        release.set()
        await runner.cleanup()


def _observed_view(spans: list[Any], log: str, ports: dict[int, str]) -> tuple[object, ...]:
    """Exported spans and access-log lines with what differs between two runs (ids, times, ports) named."""
    def named(value: object) -> object:
        if isinstance(value, str):
            for port, name in ports.items():
                value = value.replace(f":{port}", f":<{name}>")
        return value

    by_id = {s.context.span_id: s for s in spans}
    span_view = sorted(
        (s.name, str(s.kind), str(s.status.status_code),
         tuple(sorted((k, named(v)) for k, v in s.attributes.items())),
         by_id[s.parent.span_id].attributes.get("url.full") if s.parent and s.parent.span_id in by_id else None)
        for s in spans
    )
    kept = ("response_code", "response_flags", "upstream_cluster", "upstream_host", "route_name", "attempts", "path")
    log_view = [
        tuple(named(entry.get(key)) for key in kept) for entry in map(json.loads, log.splitlines())
    ]
    return span_view, log_view


@pytest.mark.parametrize("with_sink", [False, True], ids=["tracing", "tracing+access-log"])
async def test_observed_requests_fused_as_on_the_full_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_sink: bool
) -> None:
    """A traced request (and one logged) takes the fused path and records what the full path records,
    retry spans included; the upstream sees each attempt's own trace context."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    taken = _count_fused(monkeypatch)
    views = []
    for fused_on in (True, False):
        if not fused_on:
            _switch_off_fused(monkeypatch)
        async with _upstreams("503", "ok") as ups:
            config = tmp_path / f"mesh-{fused_on}.yaml"
            config.write_text(_mesh_yaml({u.name: u.port for u in ups}, "    retries: {attempts: 2, retryOn: 5xx}"))
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            log = io.StringIO()
            mesh = meshlib.Mesh.from_files(config, rng=random.Random(7))
            mesh.enable_tracing(provider)
            if with_sink:
                mesh.enable_access_log(log)
            async with mesh, mesh.session() as http:
                seen = await _get_all(http, 6)
                mesh.flush_telemetry()
            spans = list(exporter.get_finished_spans())
            views.append((seen, _observed_view(spans, log.getvalue(), {u.port: u.name for u in ups})))
            # Every upstream request carried a sampled traceparent of a span that was exported.
            sent = [h["traceparent"] for u in ups for h in u.headers]
            exported = {f"{s.context.span_id:016x}" for s in spans}
            assert len(sent) > 6 and all(int(t[-2:], 16) & 1 and t.split("-")[2] in exported for t in sent)
    assert taken[0] == 6  # the first run took the fused path, the second none
    assert views[0] == views[1]
    span_view, log_view = views[0][1]
    assert any(dict(attrs).get("http.request.resend_count") == 1 for _, _, _, attrs, _ in span_view)
    assert len(log_view) == (6 if with_sink else 0)


async def test_sampled_out_requests_take_the_fused_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracing on and the span sampled out: the context travels (unsampled), nothing is recorded."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    taken = _count_fused(monkeypatch)
    async with _upstreams("ok") as (upstream,):
        config = tmp_path / "mesh.yaml"
        config.write_text(_mesh_yaml({"v1": upstream.port}, ""))
        exporter = InMemorySpanExporter()
        provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        mesh = meshlib.Mesh.from_files(config)
        mesh.enable_tracing(provider)
        async with mesh, mesh.session() as http:
            seen = await _get_all(http, 4)
            mesh.flush_telemetry()
    assert [s[0] for s in seen] == [200] * 4
    assert taken[0] == 4
    assert exporter.get_finished_spans() == ()
    parents = [h["traceparent"].split("-") for h in upstream.headers]
    assert len(parents) == 4 and all(not int(flags, 16) & 1 for *_, flags in parents)  # not sampled
    assert len({trace_id for _, trace_id, _, _ in parents}) == 4  # a root per request, not one shared id
