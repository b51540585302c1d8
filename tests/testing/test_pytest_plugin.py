"""meshlib's pytest plugin, run inside a fresh pytest (``pytester``): fixtures, markers, seeds, teardown."""

from __future__ import annotations

import re

import pytest

# Imported here, so pytester's in-process runs reuse these modules rather than re-importing them
# for every inner session (faster, and module-level state such as YAML loader classes stays single).
import meshlib.aiohttp.client
import meshlib.grpc.channel
import meshlib.mesh
import meshlib.testing.faults
import meshlib.testing.meshes
import meshlib.testing.services  # noqa: F401

pytest_plugins = ["pytester"]

MESH_YAML = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - route: [{destination: {host: ratings}}]
    retries: {attempts: 2, retryOn: "5xx,reset,connect-failure"}
"""

ASYNC_TESTS = '''
import pytest

pytestmark = pytest.mark.asyncio


async def test_a_503_is_retried_onto_the_next_attempt(mesh, mesh_service, mesh_faults):
    ratings = await mesh_service("ratings", version="v1", replicas=2)
    flaky = mesh_faults.upstream("ratings").status(503, times=1)
    async with mesh.session() as http:
        async with http.get("http://ratings:9080/ratings/1") as resp:
            assert resp.status == 200
            assert (await resp.json())["service"] == "ratings"
    assert (flaky.seen, flaky.injected) == (1, 1)
    log = mesh_faults.attempts("ratings")
    assert [(a.number, a.status, a.retried) for a in log] == [(1, 503, True), (2, 200, False)]
    assert log[0].host in ratings.endpoints
    assert mesh_faults.stats_delta("ratings")["upstream_rq_retry"] == 1
    assert ratings.hits == 1  # the injected 503 never reached a stub


@pytest.mark.mesh_fault("ratings", abort=418)
async def test_marker_declares_a_route_abort(mesh, mesh_service, mesh_faults):
    await mesh_service("ratings")
    async with mesh.session() as http:
        async with http.get("http://ratings:9080/") as resp:
            assert resp.status == 418
            assert resp.headers["x-meshlib-local-reply"] == "FI"
    assert [a.flag for a in mesh_faults.attempts("ratings")] == ["FI"]


async def test_scoped_fault_ends_with_its_block(mesh, mesh_service, mesh_faults):
    await mesh_service("ratings")
    async with mesh.session() as http:
        with mesh_faults.upstream("ratings").refuse() as refused:
            async with http.get("http://ratings:9080/") as resp:
                assert resp.status == 503
                assert resp.headers["x-meshlib-local-reply"] == "UF"
        async with http.get("http://ratings:9080/") as resp:
            assert resp.status == 200
    assert refused.injected == 3  # the first try and both retries
'''

SYNC_TESTS = '''
def test_sync_test_gets_the_controller(mesh_faults):
    fault = mesh_faults.delay("reviews", 0.5, percent=50, optional=True)
    assert fault.seen == 0
    assert mesh_faults.attempts() == []
'''


def _project(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makefile(".yaml", mesh=MESH_YAML)
    pytester.makeini(
        f"[pytest]\nasyncio_mode = {mode}\nasyncio_default_fixture_loop_scope = function\nmeshlib_config = mesh.yaml\n"
    )


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_fixtures_work_in_both_asyncio_modes(pytester: pytest.Pytester, mode: str) -> None:
    _project(pytester, mode)
    pytester.makepyfile(test_async=ASYNC_TESTS, test_sync=SYNC_TESTS)
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_a_fault_that_matched_nothing_fails_the_test_at_teardown(pytester: pytest.Pytester) -> None:
    _project(pytester, "strict")
    pytester.makepyfile('''
import pytest

def test_forgot_to_send_traffic(mesh_faults):
    mesh_faults.abort("ratings", 503)

@pytest.mark.mesh_faults(assert_all_used=False)
def test_opted_out(mesh_faults):
    mesh_faults.abort("ratings", 503)

def test_optional_fault(mesh_faults):
    mesh_faults.upstream("ratings", optional=True).reset()
''')
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*mesh faults declared but never matched a request: abort(ratings*"])


SEEDED = '''
import pytest

pytestmark = pytest.mark.asyncio


async def test_half_aborted(mesh, mesh_service, mesh_faults, tmp_path_factory):
    await mesh_service("ratings")
    mesh_faults.abort("ratings", 503, percent=50)
    statuses = []
    async with mesh.session() as http:
        for _ in range(24):
            async with http.get("http://ratings:9080/") as resp:
                statuses.append(resp.status)
    print("PATTERN", "".join("x" if s == 503 else "." for s in statuses))
    assert 503 not in statuses, "a failure to replay"
'''


def test_a_failing_test_names_its_seed_and_the_seed_replays_it(pytester: pytest.Pytester) -> None:
    _project(pytester, "strict")
    pytester.makepyfile(test_seeded=SEEDED)
    first = pytester.runpytest("-p", "no:cacheprovider", "-s")
    first.assert_outcomes(failed=1)
    output = first.stdout.str()
    seed = re.search(r"--mesh-fault-seed=(\d+)", output)
    assert seed is not None, output
    pattern = re.search(r"PATTERN ([x.]+)", output)
    assert pattern is not None and "x" in pattern.group(1) and "." in pattern.group(1)
    replay = pytester.runpytest("-p", "no:cacheprovider", "-s", f"--mesh-fault-seed={seed.group(1)}")
    replay.assert_outcomes(failed=1)
    assert f"PATTERN {pattern.group(1)}" in replay.stdout.str()
    replay.stdout.fnmatch_lines([f"meshlib: mesh fault seed {seed.group(1)}"])  # in the report header


GRPC_TESTS = '''
import grpc
import pytest

pytestmark = pytest.mark.asyncio


async def echo(request, context):
    return b"echo:" + request


async def test_grpc_status_fault_is_retried_and_an_abort_is_not(mesh, mesh_service, mesh_faults):
    await mesh_service("ratings", grpc={"/test.Echo/Call": echo}, replicas=2)
    unavailable = mesh_faults.upstream("ratings").status(503, times=1)
    async with mesh.grpc_channel("ratings.default.svc.cluster.local:9080") as channel:
        call = channel.unary_unary("/test.Echo/Call")
        assert await call(b"hi") == b"echo:hi"
        assert unavailable.injected == 1
        assert [a.grpc_status for a in mesh_faults.attempts("ratings")] == [14, 0]
        with mesh_faults.abort("ratings", grpc_status="RESOURCE_EXHAUSTED"):
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await call(b"hi")
        assert failure.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_grpc_reset_and_blackhole(mesh, mesh_service, mesh_faults):
    await mesh_service("ratings", grpc={"/test.Echo/Call": echo})
    async with mesh.grpc_channel("ratings.default.svc.cluster.local:9080") as channel:
        call = channel.unary_unary("/test.Echo/Call")
        with mesh_faults.upstream("ratings").reset():
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await call(b"hi")
            assert failure.value.code() is grpc.StatusCode.UNAVAILABLE
        with mesh_faults.upstream("ratings").blackhole():
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await call(b"hi", timeout=0.3)
            assert failure.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert await call(b"ok") == b"echo:ok"


@pytest.mark.parametrize(("action", "code", "flag"), [
    ("refuse", "UNAVAILABLE", "UF"), ("malformed", "UNAVAILABLE", "UPE"), ("stall_body", "DEADLINE_EXCEEDED", "UT"),
])
async def test_grpc_broken_hosts(mesh, mesh_service, mesh_faults, action, code, flag):
    await mesh_service("ratings", grpc={"/test.Echo/Call": echo})
    getattr(mesh_faults.upstream("ratings"), action)()
    async with mesh.grpc_channel("ratings.default.svc.cluster.local:9080") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await channel.unary_unary("/test.Echo/Call")(b"hi", timeout=0.5)
    assert failure.value.code().name == code
    assert mesh_faults.attempts("ratings")[0].flag == flag


async def test_grpc_status_by_name_and_latency(mesh, mesh_service, mesh_faults):
    await mesh_service("ratings", grpc={"/test.Echo/Call": echo})
    mesh_faults.upstream("ratings").status(grpc_status=8, times=1)  # RESOURCE_EXHAUSTED: not in retryOn
    async with mesh.grpc_channel("ratings.default.svc.cluster.local:9080") as channel:
        call = channel.unary_unary("/test.Echo/Call")
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call(b"hi")
        assert failure.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        with mesh_faults.upstream("ratings").latency(0.5):
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await call(b"hi", timeout=0.2)
        assert failure.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
'''


def test_faults_act_on_grpc_channels(pytester: pytest.Pytester) -> None:
    _project(pytester, "strict")
    pytester.makefile(".yaml", mesh=MESH_YAML.replace('"5xx,reset,connect-failure"', '"unavailable,reset"'))
    pytester.makepyfile(test_grpc=GRPC_TESTS)
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)


def test_the_plugin_can_be_turned_off(pytester: pytest.Pytester) -> None:
    _project(pytester, "strict")
    pytester.makepyfile(test_off=SYNC_TESTS)
    result = pytester.runpytest("-p", "no:meshlib", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'mesh_faults' not found*"])


def test_bad_marker_arguments_fail_clearly(pytester: pytest.Pytester) -> None:
    _project(pytester, "strict")
    pytester.makepyfile('''
import pytest

@pytest.mark.mesh_fault("ratings", abrot=503)
def test_typo(mesh_faults):
    pass
''')
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    assert "@pytest.mark.mesh_fault: unknown argument(s) ['abrot']" in result.stdout.str()
    assert "During handling" not in result.stdout.str()


UPSTREAM_BEHAVIOURS = '''
import asyncio
import time

import aiohttp
import pytest

import meshlib

pytestmark = pytest.mark.asyncio
STRICT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - route: [{destination: {host: ratings}}]
    timeout: 400ms
    retries: {attempts: 0}
"""


async def get(mesh, path="/"):
    async with mesh.session() as http:
        async with http.get("http://ratings:9080" + path) as resp:
            try:
                body = await resp.read()
            except aiohttp.ServerTimeoutError:
                body = None
            return resp.status, resp.headers.get("x-meshlib-local-reply"), body


@pytest.mark.mesh_config(STRICT)
@pytest.mark.parametrize(("action", "expected"), [
    ("refuse", (503, "UF")), ("reset", (503, "UC")), ("blackhole", (504, "UT")), ("malformed", (503, "UPE")),
])
async def test_broken_connections(mesh, mesh_service, mesh_faults, action, expected):
    await mesh_service("ratings")
    fault = getattr(mesh_faults.upstream("ratings"), action)()
    status, flag, _ = await get(mesh)
    assert (status, flag) == expected
    assert [a.flag for a in mesh_faults.attempts("ratings")] == [expected[1]]
    assert fault.injected == 1


@pytest.mark.mesh_config(STRICT)
async def test_bodies_stalled_slow_and_latency(mesh, mesh_service, mesh_faults):
    await mesh_service("ratings")
    with mesh_faults.upstream("ratings").stall_body():
        assert await get(mesh) == (200, None, None)  # headers in time, the body timed out by the route timeout
    with mesh_faults.upstream("ratings").slow_body(0.1):
        status, _, body = await get(mesh)
        assert (status, len(body)) == (200, 1024)
    with mesh_faults.upstream("ratings").latency(0.15, jitter=0.05):
        started = time.monotonic()
        status, _, _ = await get(mesh)
        assert status == 200 and time.monotonic() - started >= 0.1
    with mesh_faults.upstream("ratings").latency(0.6):
        assert (await get(mesh))[:2] == (504, "UT")  # the latency counts against the route timeout
    assert mesh_faults.stats_delta("ratings")["upstream_rq_timeout"] == 2


@pytest.mark.mesh_config(STRICT)
async def test_route_faults_narrowed_by_match_and_subset(mesh, mesh_service, mesh_faults):
    await mesh_service("ratings")
    by_path = mesh_faults.abort("ratings", 404, match={"path_prefix": "/private", "method": "GET"})
    other_subset = mesh_faults.abort("ratings", 500, subset="v9", optional=True)
    assert (await get(mesh, "/private/1"))[:2] == (404, "FI")
    assert (await get(mesh, "/public/1"))[:2] == (200, None)
    assert (by_path.seen, by_path.injected) == (1, 1)
    assert other_subset.seen == 0
    delayed = mesh_faults.delay("ratings", 0.6)  # before routing: not counted in the 400 ms route timeout
    assert (await get(mesh))[:2] == (200, None)
    assert delayed.injected == 1
    assert mesh_faults.stats_delta("ratings")["fault_delays_injected"] == 1


@pytest.mark.mesh_config(STRICT)
async def test_on_narrows_the_faults_to_one_mesh(mesh, mesh_service, mesh_faults, mesh_config, tmp_path):
    await mesh_service("ratings")
    other = meshlib.Mesh.from_files(*mesh.status()["paths"])
    async with other:
        mesh_faults.on(other)
        mesh_faults.abort("ratings", 503)
        assert (await get(mesh))[:2] == (200, None)
        assert (await get(other))[:2] == (503, "FI")


def test_consul_agent(consul_agent):
    import json
    import urllib.request

    consul_agent.emulator.add_service("web", 8080)
    with urllib.request.urlopen(consul_agent.url + "/v1/health/service/web") as resp:
        assert [e["Service"]["Service"] for e in json.load(resp)] == ["web"]
'''


def test_upstream_faults_behave_like_broken_hosts(pytester: pytest.Pytester) -> None:
    _project(pytester, "strict")
    pytester.makepyfile(test_upstream=UPSTREAM_BEHAVIOURS)
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=8)


CONTROL_PLANE = '''
import json
import os

import pytest

import meshlib

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: grpc, protocol: GRPC}]
  endpoints: [{address: 127.0.0.1, ports: {grpc: 19999}}]
"""


@pytest.mark.asyncio
@pytest.mark.mesh_config(MESH)
async def test_control_plane_serves_the_config(mesh_control_plane):
    bootstrap = json.loads(os.environ["GRPC_XDS_BOOTSTRAP_CONFIG"])
    assert bootstrap["xds_servers"][0]["server_uri"] == mesh_control_plane.address
    async with meshlib.Mesh.from_xds(mesh_control_plane.address, node_id="test-client") as mesh:
        assert "outbound|9080||ratings.default.svc.cluster.local" in mesh.snapshot.clusters


@pytest.mark.asyncio
@pytest.mark.mesh_config(MESH)
async def test_stubs_are_served_by_the_control_plane_too(mesh, mesh_service, mesh_control_plane):
    from meshlib.discovery.xds import xds_source_of

    details = await mesh_service("details", version="v2")
    cluster = "outbound|9080||details.default.svc.cluster.local"
    async with meshlib.Mesh.from_xds(mesh_control_plane.address, node_id="xds-client") as fed:
        await xds_source_of(fed).wait_for_version(lambda client: cluster in fed.snapshot.clusters, timeout_s=10)
        async with fed.session() as http, http.get(details.url + "/from-xds") as resp:
            assert resp.status == 200
            assert (await resp.json())["version"] == "v2"
    assert details.requests == [(details.endpoints[0], "GET", "/from-xds")]


def test_bootstrap_is_gone_after_the_control_plane(pytester_was_here=None):
    import os
    assert "GRPC_XDS_BOOTSTRAP_CONFIG" not in os.environ
'''


def test_control_plane_fixture(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRPC_XDS_BOOTSTRAP_CONFIG", raising=False)
    _project(pytester, "strict")
    pytester.makepyfile(test_cp=CONTROL_PLANE)
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


LOOPS = """
import asyncio
import pytest
from aiohttp import web

import meshlib

YAML = \'\'\'
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: default}
spec:
  hosts: [svc.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: PORT}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc, namespace: default}
spec:
  hosts: [svc]
  http:
  - route: [{destination: {host: svc}}]
    retries: {attempts: 2, retryOn: reset}
\'\'\'


async def ok(request):
    return web.Response(text="ok")


async def scenario(mesh_faults, tmp_path):
    runner = web.AppRunner(web.Application())
    runner.app.router.add_get("/", ok)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    path = tmp_path / "mesh.yaml"
    path.write_text(YAML.replace("PORT", str(runner.addresses[0][1])))
    mesh = meshlib.Mesh.from_files(path)  # built after the controller: still covered
    mesh_faults.upstream("svc").reset(times=1)
    try:
        async with mesh, mesh.session() as http:
            async with http.get("http://svc:9080/") as resp:
                assert await resp.text() == "ok"
    finally:
        await runner.cleanup()
    assert [a.flag for a in mesh_faults.attempts("svc")] == ["UC", "-"]


@pytest.fixture
def premade(tmp_path):
    (tmp_path / "first.yaml").write_text(YAML.replace("PORT", "1"))
    return meshlib.Mesh.from_files(tmp_path / "first.yaml")


@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop(mesh_faults, tmp_path):
    await scenario(mesh_faults, tmp_path)


@pytest.mark.asyncio(loop_scope="session")
async def test_session_loop(mesh_faults, tmp_path):
    await scenario(mesh_faults, tmp_path)


def test_sync_test_running_its_own_loop(mesh_faults, tmp_path):
    asyncio.run(scenario(mesh_faults, tmp_path))


def test_mesh_built_before_the_controller(premade, mesh_faults):
    assert premade._faults is mesh_faults
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_any_loop_scope_and_meshes_built_anyhow(pytester: pytest.Pytester, mode: str) -> None:
    _project(pytester, mode)
    pytester.makepyfile(test_loops=LOOPS)
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_without_autoload_the_plugin_is_loaded_by_name(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_sync=SYNC_TESTS)
    result = pytester.runpytest_subprocess("-p", "meshlib.testing.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
