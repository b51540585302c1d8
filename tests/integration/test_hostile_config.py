"""Hostile and broken configuration against a running mesh: the process keeps serving, the loop keeps turning."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import meshlib
from meshlib.aiohttp.local_reply import LOCAL_REPLY_HEADER
from tests.conftest import BackendFactory
from tests.integration.test_aiohttp_client import service_entry, write
from tests.unit.config.test_hostile_yaml import billion_laughs

pytestmark = pytest.mark.asyncio

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - match: [{{headers: {{x-token: {{regex: "^(a+)+$"}}}}}}]
    route: [{{destination: {{host: reviews, subset: v2}}}}]
  - route: [{{destination: {{host: reviews, subset: {subset}}}}}]
    timeout: {timeout}
"""


class LoopWatch:
    """The longest the event loop went without running a 5 ms ticker (a stall detector)."""

    def __init__(self) -> None:
        self.longest_gap = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            self.longest_gap = max(self.longest_gap, now - last)
            last = now

    def __enter__(self) -> LoopWatch:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_hostile_reloads_are_refused_without_stalling_and_a_good_edit_still_lands(
    backend: BackendFactory, tmp_path: Path
) -> None:
    v1, v2 = await backend("v1"), await backend("v2")
    se = service_entry("reviews", {"v1": v1, "v2": v2})
    cfg = write(tmp_path / "mesh.yaml", se, VS.format(subset="v1", timeout="2562047h"))
    mesh = meshlib.Mesh.from_files(cfg, poll_interval_s=0.02)
    async with mesh, mesh.session() as http:

        async def served_by(headers: dict[str, str] | None = None) -> str:
            async with http.get("http://reviews:9080/", headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                return str((await resp.json())["name"])

        # A timeout at Go's maximum (~292 years) validates, is explained as a number and is served without overflow.
        explained = mesh.explain("GET", "http://reviews:9080/")
        assert explained["timeout_s"] == 2562047 * 3600
        assert await served_by() == "v1"
        # The ReDoS pattern from the issue runs in RE2: no backtracking, no stall.
        started = time.perf_counter()
        assert await served_by({"x-token": "a" * 40 + "!"}) == "v1"
        assert await served_by({"x-token": "a" * 40}) == "v2"
        assert time.perf_counter() - started < 2.0

        hostile = {
            "alias bomb": billion_laughs(),
            "huge duration": se + "\n---\n" + VS.format(subset="v2", timeout="99999999999999999999h"),
            "emptied": "",
            "truncated": se.split("endpoints:")[0][:40],
        }
        with LoopWatch() as watch:
            for name, text in hostile.items():
                attempts = mesh.reload_attempts
                cfg.write_text(text)
                await mesh.wait_for_reload(attempts)
                assert await served_by() == "v1", name  # the last good configuration stays
                errors = mesh.status()["last_error"]
                assert errors, name
                assert all("Traceback" not in e for e in errors)
        assert watch.longest_gap < 0.5  # generous on a loaded 2-core machine; a bomb used to stall for minutes

        attempts = mesh.reload_attempts
        write(cfg, se, VS.format(subset="v2", timeout="1s"))
        await mesh.wait_for_reload(attempts)
        assert await served_by() == "v2"
        assert mesh.status()["last_error"] == []


async def test_refusal_reasons_are_specific(backend: BackendFactory, tmp_path: Path) -> None:
    v1 = await backend("v1")
    se = service_entry("reviews", {"v1": v1})
    cfg = write(tmp_path / "mesh.yaml", se, VS.format(subset="v1", timeout="1s"))
    mesh = meshlib.Mesh.from_files(cfg, poll_interval_s=0.02)
    async with mesh:
        for text, expected in [
            (billion_laughs(), "mesh.yaml:4: excessive YAML aliasing: more than 10000 values produced through aliases"),
            ("", "refusing a reload that removes every service and route (1 service(s)"),
            (
                se + "\n---\n" + VS.format(subset="v1", timeout="99999999999999999999h"),
                'spec.http[1].timeout: invalid duration "99999999999999999999h" (longer than the maximum',
            ),
        ]:
            attempts = mesh.reload_attempts
            cfg.write_text(text)
            await mesh.wait_for_reload(attempts)
            assert any(expected in e for e in mesh.status()["last_error"]), mesh.status()["last_error"]

        attempts = mesh.reload_attempts
        cfg.write_text("apiVersion: meshlib.io/v1\nkind: EmptyMesh\n")
        await mesh.wait_for_reload(attempts)
        assert mesh.status()["last_error"] == []
        assert mesh.status()["clusters"] == 0


async def test_route_to_an_undefined_subset_or_host_gets_503_nc(backend: BackendFactory, tmp_path: Path) -> None:
    v1 = await backend("v1")
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /nohost}}]
    route: [{destination: {host: details}}]
  - route: [{destination: {host: reviews, subset: v9}}]
"""
    cfg = write(tmp_path / "mesh.yaml", service_entry("reviews", {"v1": v1}), vs)
    mesh = meshlib.Mesh.from_files(cfg)  # IST0101 warnings only: the configuration loads, as in Istio
    async with mesh, mesh.session() as http:
        for path in ("/x", "/nohost"):
            async with http.get(f"http://reviews:9080{path}") as resp:
                assert resp.status == 503
                assert resp.headers[LOCAL_REPLY_HEADER] == "NC"
        warnings = mesh.status()["warnings"]  # the configuration in force says what is wrong with it
        assert any("IST0101" in w and "details" in w for w in warnings), warnings
        assert any("IST0101" in w and "v9" in w for w in warnings), warnings
        assert mesh.status()["last_error"] == []
    assert v1.requests == []


async def test_sidecar_registry_only_refuses_hosts_outside_its_egress(backend: BackendFactory, tmp_path: Path) -> None:
    v1 = await backend("v1")
    sidecar = (
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: default}\n"
        "spec:\n  egress: [{hosts: ['./*']}]\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"
    )
    cfg = write(tmp_path / "mesh.yaml", service_entry("reviews", {"v1": v1}), sidecar)
    mesh = meshlib.Mesh.from_files(cfg)  # the mesh-wide default is ALLOW_ANY; the Sidecar overrides it
    async with mesh, mesh.session() as http:
        async with http.get("http://reviews:9080/") as resp:
            assert resp.status == 200
        async with http.get(f"http://127.0.0.1:{v1.port}/direct") as resp:
            assert resp.status == 502
            assert resp.headers[LOCAL_REPLY_HEADER] == "NR"
    assert v1.hits == 1


async def test_allow_empty_reload_flag(backend: BackendFactory, tmp_path: Path) -> None:
    v1 = await backend("v1")
    cfg = write(tmp_path / "mesh.yaml", service_entry("reviews", {"v1": v1}))
    mesh = meshlib.Mesh.from_files(cfg, poll_interval_s=0.02, allow_empty_reload=True)
    async with mesh:
        attempts = mesh.reload_attempts
        cfg.write_text("")
        await mesh.wait_for_reload(attempts)
        assert mesh.status()["last_error"] == []
        assert mesh.status()["clusters"] == 0
