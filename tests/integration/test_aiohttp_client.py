"""The aiohttp client path against real loopback servers: routing, splitting, rewrite, reload."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

import meshlib
from meshlib.aiohttp.local_reply import LOCAL_REPLY_HEADER
from tests.conftest import Backend, BackendFactory

pytestmark = pytest.mark.asyncio


def service_entry(name: str, endpoints: dict[str, Backend]) -> str:
    eps = "\n".join(
        f"  - address: 127.0.0.1\n    ports: {{http: {b.port}}}\n    labels: {{app: {name}, version: {v}}}"
        for v, b in endpoints.items()
    )
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 9080, name: http, protocol: HTTP}}
  endpoints:
{eps}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {name}
  subsets:
""" + "\n".join(f"  - {{name: {v}, labels: {{version: {v}}}}}" for v in endpoints)


def write(path: Path, *docs: str) -> Path:
    path.write_text("\n---\n".join(docs))
    return path


async def test_weighted_canary_split(backend: BackendFactory, tmp_path: Path) -> None:
    v1, v2 = await backend("v1"), await backend("v2")
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 75}
    - {destination: {host: reviews, subset: v2}, weight: 25}
"""
    cfg = write(tmp_path / "mesh.yaml", service_entry("reviews", {"v1": v1, "v2": v2}), vs)
    mesh = meshlib.Mesh.from_files(cfg, rng=random.Random(42))
    async with mesh, mesh.session() as http:
        for _ in range(400):
            async with http.get("http://reviews:9080/r") as resp:
                assert resp.status == 200
    # 400 draws at p=0.75: sd ≈ 8.7 requests; allow 4 sd.
    assert abs(v1.hits - 300) <= 35
    assert v1.hits + v2.hits == 400


async def test_header_route_and_fallthrough(backend: BackendFactory, tmp_path: Path) -> None:
    v1, v2 = await backend("v1"), await backend("v2")
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
"""
    cfg = write(tmp_path / "mesh.yaml", service_entry("reviews", {"v1": v1, "v2": v2}), vs)
    mesh = meshlib.Mesh.from_files(cfg)
    async with mesh, mesh.session() as http:
        for _ in range(5):
            async with http.get("http://reviews:9080/r", headers={"end-user": "jason"}) as resp:
                assert (await resp.json())["name"] == "v2"
            async with http.get("http://reviews.default:9080/r", headers={"end-user": "bob"}) as resp:
                assert (await resp.json())["name"] == "v1"
    assert (v1.hits, v2.hits) == (5, 5)


async def test_rewrite_host_header_and_request_id(backend: BackendFactory, tmp_path: Path) -> None:
    v1 = await backend("v1")
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /old/}
    rewrite: {uri: /new/}
    headers:
      request: {set: {x-routed-by: meshlib}}
      response: {add: {x-served-by: reviews}}
    route:
    - destination: {host: reviews}
"""
    cfg = write(tmp_path / "mesh.yaml", service_entry("reviews", {"v1": v1}), vs)
    mesh = meshlib.Mesh.from_files(cfg)
    async with mesh, mesh.session() as http:
        async with http.get("http://reviews:9080/old/page?x=1&y=2") as resp:
            body = await resp.json()
            assert resp.headers["x-served-by"] == "reviews"
        async with http.get("http://reviews:9080/old/2", headers={"x-request-id": "abc"}) as resp:
            assert resp.status == 200
    assert body["path"] == "/new/page?x=1&y=2"
    first, second = v1.requests
    assert first.headers["Host"] == "reviews:9080"  # the logical name, not the dialled IP
    assert first.headers["x-routed-by"] == "meshlib"
    assert len(first.headers["x-request-id"]) == 36  # generated UUIDv4
    assert second.headers["x-request-id"] == "abc"  # an existing id is kept


async def test_no_route_answers_404_locally(backend: BackendFactory, tmp_path: Path) -> None:
    v1 = await backend("v1")
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /api/}
    route:
    - destination: {host: reviews}
"""
    cfg = write(tmp_path / "mesh.yaml", service_entry("reviews", {"v1": v1}), vs)
    mesh = meshlib.Mesh.from_files(cfg)
    async with mesh, mesh.session() as http, http.get("http://reviews:9080/other") as resp:
        assert resp.status == 404
        assert resp.headers[LOCAL_REPLY_HEADER] == "NR"
        assert "no route" in await resp.text()
    assert v1.hits == 0


async def test_unknown_host_passes_through_or_is_refused(backend: BackendFactory, tmp_path: Path) -> None:
    v1, outside = await backend("v1"), await backend("outside")
    cfg = write(tmp_path / "mesh.yaml", service_entry("reviews", {"v1": v1}))
    allow = meshlib.Mesh.from_files(cfg)
    async with allow, allow.session() as http:
        async with http.get(f"http://{outside.address}/x") as resp:
            assert (await resp.json())["name"] == "outside"
        async with http.get("http://reviews:9080/x") as resp:  # no VirtualService: default route
            assert (await resp.json())["name"] == "v1"
    strict = meshlib.Mesh.from_files(cfg, outbound_traffic_policy="REGISTRY_ONLY")
    async with strict, strict.session() as http, http.get(f"http://{outside.address}/x") as resp:
        assert resp.status == 502
    assert outside.hits == 1


async def test_hot_reload_and_invalid_reload(backend: BackendFactory, tmp_path: Path) -> None:
    v1, v2 = await backend("v1"), await backend("v2")
    se = service_entry("reviews", {"v1": v1, "v2": v2})
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: {subset}}}
      weight: {weight}
"""
    cfg = write(tmp_path / "mesh.yaml", se, vs.format(subset="v1", weight=100))
    mesh = meshlib.Mesh.from_files(cfg, poll_interval_s=0.05)
    async with mesh, mesh.session() as http:

        async def served_by() -> str:
            async with http.get("http://reviews:9080/") as resp:
                return str((await resp.json())["name"])

        assert await served_by() == "v1"
        attempts = mesh.reload_attempts
        write(cfg, se, vs.format(subset="v2", weight=100))
        await mesh.wait_for_reload(attempts)
        assert await served_by() == "v2"

        attempts = mesh.reload_attempts
        write(cfg, se, vs.format(subset="v1", weight=-3))  # invalid weight (weights are relative, but not negative)
        await mesh.wait_for_reload(attempts)
        assert await served_by() == "v2"  # the last good configuration stays
        errors = mesh.status()["last_error"]
        assert any("weight: must be at least 0" in e and "mesh.yaml:" in e for e in errors)


async def test_invalid_config_refuses_to_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\n"
        "spec:\n  hosts: [r]\n  http:\n  - route:\n    - destination: {host: r}\n      weight: -1\n"
    )
    with pytest.raises(meshlib.ConfigInvalid) as info:
        meshlib.Mesh.from_files(bad)
    assert any("spec.http[0].route[0].weight: must be at least 0" in str(p) for p in info.value.problems)


async def test_redirect_is_followed_through_the_mesh(backend: BackendFactory, tmp_path: Path) -> None:
    v1 = await backend("v1")
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {exact: /legacy}}]
    redirect: {uri: /current}
  - route: [{destination: {host: reviews}}]
"""
    cfg = write(tmp_path / "mesh.yaml", service_entry("reviews", {"v1": v1}), vs)
    mesh = meshlib.Mesh.from_files(cfg)
    async with mesh, mesh.session() as http:
        async with http.get("http://reviews:9080/legacy", allow_redirects=False) as resp:
            assert resp.status == 301
            assert resp.headers["location"] == "http://reviews:9080/current"
        async with http.get("http://reviews:9080/legacy") as resp:
            assert (await resp.json())["path"] == "/current"
    assert v1.hits == 1


async def test_own_session_with_middleware(backend: BackendFactory, tmp_path: Path) -> None:
    v1 = await backend("v1")
    cfg = write(tmp_path / "mesh.yaml", service_entry("reviews", {"v1": v1}))
    mesh = meshlib.Mesh.from_files(cfg)
    async with (
        mesh,
        aiohttp.ClientSession(middlewares=(mesh.middleware(),)) as http,
        http.get("http://reviews.default.svc.cluster.local:9080/x") as resp,
    ):
        assert (await resp.json())["name"] == "v1"
    assert Counter(r.path for r in v1.requests) == {"/x": 1}


async def test_watch_survives_an_unexpected_error(backend: BackendFactory, tmp_path: Path) -> None:
    """A failing poll is retried (tenacity), so hot reload keeps working afterwards."""
    v1, v2 = await backend("v1"), await backend("v2")
    se = service_entry("reviews", {"v1": v1, "v2": v2})
    vs = (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\n"
        "spec:\n  hosts: [reviews]\n  http:\n  - route: [{{destination: {{host: reviews, subset: {subset}}}}}]\n"
    )
    cfg = write(tmp_path / "mesh.yaml", se, vs.format(subset="v1"))
    mesh = meshlib.Mesh.from_files(cfg, poll_interval_s=0.02)
    source = mesh._file_source
    assert source is not None
    real_poll = source.poll
    failures = 0

    async def flaky_poll() -> None:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise OSError("transient filesystem error")
        await real_poll()

    source.poll = flaky_poll  # type: ignore[method-assign]
    async with mesh, mesh.session() as http:
        attempts = mesh.reload_attempts
        write(cfg, se, vs.format(subset="v2"))
        await mesh.wait_for_reload(attempts)
        async with http.get("http://reviews:9080/") as resp:
            assert (await resp.json())["name"] == "v2"
    assert failures == 2
