"""The admin server answers only trusted Host headers (DNS rebinding) and warns when bound beyond loopback."""

from __future__ import annotations

import logging

import aiohttp
import pytest

import meshlib
from meshlib.admin import AdminServer, start_admin
from meshlib.admin.host_check import host_name, is_loopback_bind, is_trusted_host

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize(
    ("host", "trusted"),
    [
        ("localhost:15000", True),
        ("LOCALHOST", True),
        ("app.localhost:15000", True),
        ("127.0.0.1:15000", True),
        ("[::1]:15000", True),
        ("10.1.2.3", True),
        ("evil.example:15000", False),
        ("evil.example", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io", False),
        ("admin.internal:15000", True),  # explicitly allowed below
    ],
)
async def test_trusted_hosts(host: str, trusted: bool) -> None:
    assert is_trusted_host(host, frozenset({"admin.internal"})) is trusted


async def test_host_name_parsing() -> None:
    assert host_name("[::1]:8080") == "::1"
    assert host_name("Example.COM.:80") == "example.com"
    assert host_name("::1") == "::1"


async def test_rebinding_host_gets_421_and_nothing_else(admin: AdminServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(admin.url + "config_dump", headers={"Host": "evil.example:15000"}) as resp:
            assert resp.status == 421
            body = await resp.text()
            assert "DNS rebinding" in body and "configs" not in body
        async with http.get(admin.url + "config_dump", headers={"Host": f"localhost:{admin.port}"}) as resp:
            assert resp.status == 200
            assert "configs" in await resp.json()
        async with http.get(admin.url + "ready") as resp:  # Host: 127.0.0.1:port
            assert resp.status == 200


async def test_loopback_is_default_and_other_binds_warn(caplog: pytest.LogCaptureFixture) -> None:
    assert is_loopback_bind("127.0.0.1") and is_loopback_bind("::1") and is_loopback_bind("localhost")
    assert not is_loopback_bind("0.0.0.0") and not is_loopback_bind("10.0.0.1")
    mesh = meshlib.Mesh.from_files()
    with caplog.at_level(logging.WARNING, logger="meshlib.admin.app"):
        server = await start_admin(mesh, port=0)
        await server.close()
    assert not [r for r in caplog.records if "reachable from other machines" in r.getMessage()]
    assert server.host == "127.0.0.1"


async def test_control_plane_status_checks_host_too() -> None:
    from meshlib.controlplane import ControlPlane

    async with ControlPlane(port=0, status_port=0) as plane, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{plane.status_port}/status"
        async with http.get(url, headers={"Host": "rebind.example"}) as resp:
            assert resp.status == 421
        async with http.get(url) as resp:
            assert resp.status == 200 and "streams" in await resp.json()
