"""An admin server for the embedded bookinfo mesh, on a loopback ephemeral port, and GET helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

import meshlib
from meshlib.admin import AdminServer, start_admin

EJECTED = "127.0.0.1:19182"  # reviews v2's only endpoint
REVIEWS = "reviews.default.svc.cluster.local"
V2 = f"outbound|9080|v2|{REVIEWS}"


async def get(server: AdminServer, path: str) -> tuple[int, str, str]:
    """(status, Content-Type, body) of ``GET path`` on the admin server."""
    async with aiohttp.ClientSession() as http, http.get(server.url + path.lstrip("/")) as response:
        return response.status, response.headers["Content-Type"], await response.text()


async def get_json(server: AdminServer, path: str) -> Any:
    """The JSON body of ``GET path``, which must answer 200 with ``application/json``."""
    async with aiohttp.ClientSession() as http, http.get(server.url + path.lstrip("/")) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        return await response.json()


@pytest.fixture
def mesh() -> meshlib.Mesh:
    """The embedded default mesh with reviews v2's host ejected by outlier detection."""
    mesh = meshlib.Mesh.from_files()
    mesh.host_stats.set_ejected(EJECTED, True, mesh.clock())
    return mesh


@pytest_asyncio.fixture
async def admin(mesh: meshlib.Mesh) -> AsyncIterator[AdminServer]:
    server = await start_admin(mesh, port=0)
    try:
        yield server
    finally:
        await server.close()
