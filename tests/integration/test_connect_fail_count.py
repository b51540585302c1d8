"""``upstream_cx_connect_fail`` counts every failed connection, as Envoy does: 3 attempts refused → 3."""

from __future__ import annotations

from pathlib import Path

import pytest

import meshlib
from meshlib.aiohttp.local_reply import LOCAL_REPLY_HEADER
from tests.integration.misbehaving import mesh_yaml
from tests.ports import refused_port

pytestmark = pytest.mark.asyncio

CLUSTER = "outbound|9080||svc.default.svc.cluster.local"


async def test_each_refused_attempt_is_one_connect_failure(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text(mesh_yaml(
        {"down": refused_port()}, vs_rule="    retries: {attempts: 2, retryOn: connect-failure}",
    ))
    mesh = meshlib.Mesh.from_files(tmp_path / "mesh.yaml")
    async with mesh, mesh.session() as http, http.get("http://svc:9080/") as resp:
        assert resp.status == 503
        assert resp.headers[LOCAL_REPLY_HEADER] == "UF"
    stats = mesh.stats()["clusters"][CLUSTER]
    assert stats["upstream_rq_retry"] == 2
    assert stats["upstream_cx_connect_fail"] == 3  # the first attempt and both retries
    assert stats["upstream_rq_total"] == 1  # still one request
