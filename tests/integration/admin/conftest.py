"""An admin server for the embedded bookinfo mesh, on a loopback ephemeral port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import meshlib
from meshlib.admin import AdminServer, start_admin

EJECTED = "127.0.0.1:19182"  # reviews v2's only endpoint


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
