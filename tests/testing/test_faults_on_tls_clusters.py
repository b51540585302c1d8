"""Upstream faults on a cluster with DestinationRule tls: those that need an answer refuse clearly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import meshlib
from meshlib.aiohttp.local_reply import LOCAL_REPLY_HEADER
from meshlib.testing.faults import FaultNotApplicable, MeshFaults
from tests.integration.misbehaving import mesh_yaml
from tests.ports import refused_port

pytestmark = pytest.mark.asyncio


def _mesh(tmp_path: Path, tls_mode: str) -> meshlib.Mesh:
    config = tmp_path / f"mesh-{tls_mode}.yaml"
    config.write_text(mesh_yaml({"only": refused_port()}, dr_policy=f"    tls: {{mode: {tls_mode}}}"))
    return meshlib.Mesh.from_files(config)


@pytest.mark.parametrize("fault", ["status", "malformed", "stall_body", "slow_body"])
async def test_an_answering_fault_on_a_tls_cluster_is_an_error(tmp_path: Path, fault: str) -> None:
    mesh = _mesh(tmp_path, "SIMPLE")
    faults = MeshFaults(seed=1).on(mesh)
    try:
        # At 1 %, with latency: raised on the first attempt all the same, before any draw, delay or count.
        upstream = faults.upstream("svc", percent=1.0).latency(30.0)
        declared = upstream.slow_body(1.0) if fault == "slow_body" else getattr(upstream, fault)()
        async with mesh, mesh.session() as http:
            expected = r"tls is SIMPLE and the fault servers speak plaintext.*use refuse\(\)"
            with pytest.raises(FaultNotApplicable, match=expected):
                await asyncio.wait_for(http.get("http://svc:9080/"), 10.0)
        assert declared.injected == 0
    finally:
        faults.close(check_unused=False)


async def test_refuse_still_acts_on_a_tls_cluster_and_answering_faults_on_plaintext(tmp_path: Path) -> None:
    for tls_mode, fault, flag in (("SIMPLE", "refuse", "UF"), ("DISABLE", "status", None)):
        mesh = _mesh(tmp_path, tls_mode)
        faults = MeshFaults(seed=1).on(mesh)
        try:
            declared = getattr(faults.upstream("svc"), fault)()
            async with mesh, mesh.session() as http, http.get("http://svc:9080/") as resp:
                assert resp.status == 503
                assert resp.headers.get(LOCAL_REPLY_HEADER) == flag, dict(resp.headers)
            # The fault acted on every attempt (the endpoint itself refuses too: the count tells the two apart;
            # Istio's default retries make a refused connection 3 attempts, a 503 one).
            assert declared.injected == len(faults.log) == (3 if fault == "refuse" else 1)
            assert all(entry.fault == declared.describe() for entry in faults.log)
        finally:
            faults.close(check_unused=False)
