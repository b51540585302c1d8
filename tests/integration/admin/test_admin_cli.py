"""``meshlib admin`` serves the debug view until it is told to stop."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.integration.cli_process import serving_cli


@pytest.mark.asyncio
async def test_meshlib_admin_command_serves_and_stops_on_sigterm() -> None:
    async with serving_cli("admin", "--port", "0") as proc:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("meshlib admin: http://127.0.0.1:"), line
        url = line.split()[2]
        async with aiohttp.ClientSession() as http, http.get(url + "status") as resp:
            status = json.loads(await resp.text())
        assert status["source"] == "files"
    assert proc.returncode == 0  # stopped by SIGTERM, cleanly
