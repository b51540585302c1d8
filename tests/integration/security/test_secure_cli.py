"""`meshlib ca init/issue`, `meshlib control-plane --ca`, `meshlib bootstrap --certs` end to end (subprocess plane)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from meshlib.cli import main
from meshlib.discovery.xds import xds_source_of
from meshlib.mesh import Mesh
from meshlib.security.ca_client import CaClientCertificateSource
from tests.integration.cli_process import serving_cli
from tests.interop.mesh_yaml import FQDN, service_yaml, write_config

READY = re.compile(
    r"ADS on (?P<ads>\S+), status on http://(?P<status>[^/\s]+)/status, mTLS, "
    r"CA for bootstrap tokens on (?P<ca>\S+)"
)
TOKEN = "cli-test-token-0123456789"


@dataclass
class SecurePlane:
    ads: str
    status: str
    ca: str
    ca_dir: Path


@pytest_asyncio.fixture
async def secure_plane(tmp_path: Path) -> AsyncIterator[SecurePlane]:
    ca_dir = tmp_path / "ca"
    assert main(["ca", "init", "--out", str(ca_dir)]) == 0
    config = tmp_path / "mesh.yaml"
    write_config(config, service_yaml(9080, "HTTP", 18001, 18002))
    tokens = tmp_path / "tokens"
    tokens.write_text(f"spiffe://cluster.local/ns/default/sa/ratings {TOKEN}\n")
    plane_args = ["--config", str(config), "--port", "0", "--status-port", "0"]
    ca_args = ["--ca", str(ca_dir), "--ca-port", "0", "--ca-tokens", str(tokens)]
    async with serving_cli("control-plane", *plane_args, *ca_args, stop_timeout_s=10) as process:
        assert process.stdout is not None and process.stderr is not None
        async with asyncio.timeout(30):
            line = (await process.stdout.readline()).decode()
        match = READY.search(line)
        if not match:
            process.kill()
            pytest.fail(f"unexpected first line {line!r}: {(await process.stderr.read()).decode()[-2000:]}")
        yield SecurePlane(match["ads"], match["status"], match["ca"], ca_dir)


@pytest.mark.asyncio
async def test_issue_bootstrap_and_connect(
    secure_plane: SecurePlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = tmp_path / "reviews"
    assert (
        main(["ca", "issue", "--ca", str(secure_plane.ca_dir), "--service-account", "reviews", "--out", str(certs)])
        == 0
    )
    capsys.readouterr()
    assert main(["bootstrap", "--xds", secure_plane.ads, "--node-id", "reviews.default~1", "--certs", str(certs)]) == 0
    bootstrap = json.loads(capsys.readouterr().out)
    assert bootstrap["xds_servers"][0]["channel_creds"][0]["type"] == "tls"
    assert bootstrap["certificate_providers"]["default"]["plugin_name"] == "file_watcher"
    monkeypatch.delenv("GRPC_XDS_BOOTSTRAP", raising=False)
    monkeypatch.setenv("GRPC_XDS_BOOTSTRAP_CONFIG", json.dumps(bootstrap))
    mesh = Mesh.from_xds(namespace="default", initial_fetch_timeout_s=15)
    async with mesh:
        assert xds_source_of(mesh).client.connects == 1
        assert mesh.explain("GET", f"http://{FQDN}:9080/")["destinations"]
    async with aiohttp.ClientSession() as http, http.get(f"http://{secure_plane.status}/status") as response:
        status = await response.json()
    assert status["security"]["mode"] == "mtls" and status["security"]["denied_total"] == 0
    assert status["ca"]["bootstrap_tokens"] == 1
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["status", "--control-plane", secure_plane.status]) == 0
    shown = capsys.readouterr().out
    assert "security: mtls (trust domain cluster.local); 0 xDS stream(s) refused" in shown
    assert "CA: 0 certificate(s) issued, 0 refused" in shown


@pytest.mark.asyncio
async def test_bootstrap_token_over_the_ca_port(secure_plane: SecurePlane, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    root = (secure_plane.ca_dir / "root-cert.pem").read_bytes()
    async with CaClientCertificateSource(secure_plane.ca, ca_trust_pem=root, token_file=token_file) as source:
        assert str(source.current().spiffe_id) == "spiffe://cluster.local/ns/default/sa/ratings"


def test_bad_flag_combinations_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "mesh.yaml"
    write_config(config, service_yaml(9080, "HTTP", 18001, 18002))
    assert main(["control-plane", "--config", str(config), "--tls-cert", "a.pem"]) == 2
    assert "--tls-cert, --tls-key and --client-ca go together" in capsys.readouterr().err
    assert main(["control-plane", "--config", str(config), "--ca-tokens", "t"]) == 2
    assert "--ca-tokens needs --ca DIR" in capsys.readouterr().err
    assert main(["bootstrap", "--xds", "127.0.0.1:1", "--node-id", "n", "--certs", str(tmp_path)]) == 2
    assert "cert-chain.pem is missing" in capsys.readouterr().err
    assert main(["control-plane", "--config", str(config), "--san", "cp.internal"]) == 2
    assert "--san needs --ca DIR" in capsys.readouterr().err


def test_san_flags_reach_the_self_issued_certificate(tmp_path: Path) -> None:
    from meshlib.cli import build_parser
    from meshlib.security.cli import control_plane_security

    assert main(["ca", "init", "--out", str(tmp_path / "ca")]) == 0
    args = build_parser().parse_args(
        ["control-plane", "--config", "x", "--ca", str(tmp_path / "ca"), "--san", "cp.internal", "--san", "10.0.0.5"]
    )
    security: Any = control_plane_security(args)
    assert set(security.certificates.dns_names) == {"cp.internal", "localhost"}
    assert set(security.certificates.ip_addresses) == {"10.0.0.5", "127.0.0.1"}
