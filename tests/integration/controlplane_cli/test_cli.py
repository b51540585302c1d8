"""``meshlib bootstrap``, ``meshlib control-plane`` and ``meshlib status`` run as real subprocesses."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from meshlib.controlplane import CLUSTER, LISTENER
from tests.integration.controlplane.ads_client import SotwStream
from tests.interop.mesh_yaml import service_yaml, virtual_service, write_config
from tests.ports import free_port

CLI = (sys.executable, "-m", "meshlib.cli")
READY = re.compile(r"ADS on (?P<ads>\S+), status on http://(?P<status>[^/\s]+)/status")


async def _run(*args: str, limit_s: float = 30.0) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(limit_s):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.asyncio
async def test_bootstrap_prints_a_grpc_xds_bootstrap() -> None:
    code, out, err = await _run(
        "bootstrap", "--xds", "127.0.0.1:15010", "--node-id", "app-1", "--cluster", "shop", "--locality", "us/a/s1"
    )
    assert code == 0, err
    bootstrap = json.loads(out)
    assert bootstrap["node"] == {
        "id": "app-1", "cluster": "shop", "locality": {"region": "us", "zone": "a", "sub_zone": "s1"}
    }
    [server] = bootstrap["xds_servers"]
    assert server["server_uri"] == "127.0.0.1:15010"
    assert server["channel_creds"] == [{"type": "insecure"}]


@pytest.mark.asyncio
async def test_bootstrap_rejects_an_empty_node_id() -> None:
    code, out, err = await _run("bootstrap", "--xds", "127.0.0.1:15010", "--node-id", "")
    assert code == 2 and out == ""
    assert "node_id" in err


@pytest.mark.asyncio
async def test_status_reports_an_unreachable_control_plane() -> None:
    address = f"127.0.0.1:{free_port()}"
    code, out, err = await _run("status", "--control-plane", address, "--timeout", "2")
    assert code == 1 and out == ""
    assert f"meshlib status: cannot read http://{address}/status" in err


@pytest.mark.asyncio
async def test_control_plane_refuses_to_start_on_invalid_config(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    write_config(config, service_yaml(9080, "HTTP", 1, 2) + "---\n" + virtual_service({"v1": -150, "v2": 50}))
    code, _, err = await _run("control-plane", "--config", str(config), "--port", "0", "--status-port", "0")
    assert code == 1
    assert re.search(rf"{re.escape(str(config))}:\d+: VirtualService default/reviews: .*weight", err), err


@dataclass
class RunningPlane:
    process: asyncio.subprocess.Process
    config: Path
    ads: str
    status_address: str

    def _get_status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{self.status_address}/status", timeout=5) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    async def status(self) -> dict[str, Any]:
        """GET /status (off the event loop)."""
        return await asyncio.to_thread(self._get_status)

    async def stderr_until(self, pattern: str, limit_s: float = 10.0) -> str:
        """Read the control plane's log until a line matches ``pattern`` (the event the test awaits)."""
        assert self.process.stderr is not None
        async with asyncio.timeout(limit_s):
            while line := (await self.process.stderr.readline()).decode():
                if re.search(pattern, line):
                    return line
        raise AssertionError(f"the control plane exited before logging {pattern!r}")


@pytest_asyncio.fixture
async def running_plane(tmp_path: Path) -> AsyncIterator[RunningPlane]:
    config = tmp_path / "mesh.yaml"
    write_config(config, service_yaml(9080, "HTTP", 18001, 18002) + "---\n" + virtual_service({"v1": 100}))
    process = await asyncio.create_subprocess_exec(
        *CLI, "control-plane", "--config", str(config), "--port", "0", "--status-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(30):
            line = (await process.stdout.readline()).decode()
        match = READY.search(line)
        assert match, f"unexpected first line {line!r}"
        yield RunningPlane(process, config, match["ads"], match["status"])
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
                raise AssertionError("meshlib control-plane ignored SIGTERM") from None
            assert process.returncode == 0, "meshlib control-plane did not exit cleanly on SIGTERM"


@pytest.mark.asyncio
async def test_control_plane_status_table_and_invalid_edit_not_pushed(running_plane: RunningPlane) -> None:
    plane = running_plane
    async with grpc.aio.insecure_channel(plane.ads) as channel:
        stream = SotwStream(channel, node_id="cli-node")
        lds = await stream.fetch(LISTENER)
        # Requests on a stream are handled in order: once CDS answers, the LDS ACK has been recorded.
        cds = await stream.fetch(CLUSTER)
        first = await plane.status()
        assert first["config_errors"] == []

        code, table, err = await _run("status", "--control-plane", plane.status_address)
        assert code == 0, err
        header, row = table.splitlines()[:2]
        assert header.split()[:6] == ["NODE", "CLIENT", "CDS", "LDS", "EDS", "RDS"]
        assert row.startswith("cli-node") and "GRPC_PROXYLESS" in row
        assert f"SYNCED ({lds.version_info[:8]})" in row

        # An invalid edit: reported (log with file:line, /status, the table) and not pushed.
        write_config(plane.config, plane.config.read_text().replace(
            "subset: v1}", "subset: v1}, weight: -150"
        ))
        logged = await plane.stderr_until("config reload rejected")
        assert "the last good configuration stays" in logged
        problem = await plane.stderr_until(rf"{re.escape(str(plane.config))}:\d+:")
        assert "weight" in problem
        rejected = await plane.status()
        assert rejected["config_errors"] and all(str(plane.config) in e for e in rejected["config_errors"])
        assert rejected["config_version"] == first["config_version"]
        assert rejected["groups"] == first["groups"]
        [row_status] = [s for s in rejected["streams"] if s["node_id"] == "cli-node"]
        assert row_status["types"][LISTENER]["version_sent"] == lds.version_info
        assert row_status["types"][LISTENER]["version_acked"] == lds.version_info

        code, table, err = await _run("status", "--control-plane", plane.status_address)
        assert code == 0, err
        assert "config edit rejected (1 error(s))" in table and str(plane.config) in table

        # A valid edit after it is pushed: the next LDS/CDS response the client gets is the new version.
        write_config(plane.config, service_yaml(9081, "HTTP", 18001, 18002) + "---\n" + virtual_service({"v2": 100}))
        pushed = await stream.recv()
        before = {LISTENER: lds.version_info, CLUSTER: cds.version_info}
        assert pushed.type_url in before and pushed.version_info not in (before[pushed.type_url], "")
        assert (await plane.status())["config_errors"] == []
        stream.close()


@pytest.mark.asyncio
async def test_control_plane_reports_a_status_port_in_use(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    write_config(config, service_yaml(9080, "HTTP", 1, 2) + "---\n" + virtual_service({"v1": 100}))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = await _run("control-plane", "--config", str(config), "--port", "0", "--status-port", str(port))
    assert code == 1 and "ADS on" not in out
    assert "meshlib control-plane:" in err and "address already in use" in err
    assert "Traceback" not in err  # the ADS server that did start was stopped cleanly
