"""``meshlib admin`` serves the debug view until it is told to stop."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import aiohttp
import pytest


@pytest.mark.asyncio
async def test_meshlib_admin_command_serves_and_stops_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshlib.cli", "admin", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("meshlib admin: http://127.0.0.1:"), line
        url = line.split()[2]
        async with aiohttp.ClientSession() as http, http.get(url + "status") as resp:
            status = json.loads(await resp.text())
        assert status["source"] == "files"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
