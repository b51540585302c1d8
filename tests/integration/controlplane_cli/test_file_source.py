"""``FileSnapshotSource`` and ``run_control_plane`` in-process: per-group encoding, status keys, stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from meshlib.controlplane import LISTENER, ControlPlane, FileSnapshotSource, run_control_plane
from meshlib.errors import ConfigInvalid
from meshlib.xds import type_urls
from tests.integration.controlplane.ads_client import SotwStream
from tests.interop.mesh_yaml import service_yaml, virtual_service, write_config


def _config(tmp_path: Path, weights: dict[str, int]) -> Path:
    config = tmp_path / "mesh.yaml"
    write_config(config, service_yaml(9080, "HTTP", 18001, 18002) + "---\n" + virtual_service(weights))
    return config


def test_groups_get_their_client_kind_shapes(tmp_path: Path) -> None:
    source = FileSnapshotSource([_config(tmp_path, {"v1": 100})], bind_address="127.0.0.2")
    assert source("ENVOY") is None  # nothing loaded yet
    source.load()
    grpc_listeners = source("GRPC_PROXYLESS")
    envoy_listeners = source("ENVOY")
    assert grpc_listeners is not None and envoy_listeners is not None
    assert list(grpc_listeners[type_urls.LISTENER]) == ["reviews.default.svc.cluster.local:9080"]
    [envoy_listener] = envoy_listeners[type_urls.LISTENER].values()
    assert envoy_listener.address.socket_address.address == "127.0.0.2"
    assert source("some-custom-group") == envoy_listeners  # unknown groups get Envoy's full shapes
    assert source("ENVOY") is envoy_listeners  # encoded once per version
    assert source.status()["config_errors"] == []


def test_inbound_policies_are_reported_as_not_served(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = _config(tmp_path, {"v1": 100})
    plain = FileSnapshotSource([config])
    plain.load()
    assert plain.status()["config_warnings"] == []
    policies = tmp_path / "policies.yaml"
    policies.write_text(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, namespace: default}\n"
        "spec: {mtls: {mode: STRICT}}\n---\n"
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: default}\n"
        "spec: {}\n"
    )
    source = FileSnapshotSource([config, policies])
    with caplog.at_level("WARNING", logger="meshlib.controlplane.encoded_source"):
        source.load()
    warnings = source.status()["config_warnings"]
    assert [w.split(": ")[1] for w in warnings] == [
        "PeerAuthentication default/strict", "AuthorizationPolicy default/deny-all"]
    assert all(w.startswith(f"{policies}:") and "not served over xDS" in w for w in warnings)
    assert [r.getMessage() for r in caplog.records] == warnings  # said when the snapshot came in force
    # A new snapshot with the same policies (the routes changed): in force, and the warnings not said again.
    _config(tmp_path, {"v1": 50, "v2": 50})
    version = source.status()["config_version"]
    with caplog.at_level("WARNING", logger="meshlib.controlplane.encoded_source"):
        source.load()
    assert source.status()["config_version"] != version
    assert source.status()["config_warnings"] == warnings
    assert [r.getMessage() for r in caplog.records] == warnings


def test_invalid_files_raise_with_every_problem(tmp_path: Path) -> None:
    source = FileSnapshotSource([_config(tmp_path, {"v1": -150, "v2": 50})])
    with pytest.raises(ConfigInvalid) as info:
        source.load()
    assert any("weight" in str(p) and p.line > 0 for p in info.value.problems)


@pytest.mark.asyncio
async def test_run_control_plane_serves_until_stopped(tmp_path: Path) -> None:
    config = _config(tmp_path, {"v1": 100})
    stop = asyncio.Event()
    ready: asyncio.Future[ControlPlane] = asyncio.get_running_loop().create_future()
    runner = asyncio.create_task(
        run_control_plane([config], port=0, status_port=0, on_ready=ready.set_result, stop=stop)
    )
    async with asyncio.timeout(10):
        plane = await ready
    async with grpc.aio.insecure_channel(plane.address) as channel:
        stream = SotwStream(channel, node_id="in-process")
        lds = await stream.fetch(LISTENER)
        assert [a.type_url for a in lds.resources] == [LISTENER]
        stream.close()
    status = plane.status()
    assert status["config_paths"] == [str(config)] and status["config_errors"] == []
    stop.set()
    async with asyncio.timeout(10):
        await runner
