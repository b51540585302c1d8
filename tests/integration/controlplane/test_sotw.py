"""State-of-the-world ADS against a real grpc.aio client on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from meshlib.controlplane import CLUSTER, ENDPOINT, LISTENER, ROUTE, ControlPlane, StatusBoard, render_status_table
from tests.integration.controlplane.ads_client import WAIT, SotwStream
from tests.unit.controlplane import resources as r

pytestmark = pytest.mark.asyncio

TARGET = "svc.test:50051"
ROUTE_NAME = f"route-{TARGET}"


def _publish(plane: ControlPlane, port: int = 8080, extra: dict[str, dict[str, Any]] | None = None) -> None:
    resources = r.service(TARGET, ("10.0.0.1", port))
    for type_url, more in (extra or {}).items():
        resources[type_url].update(more)
    plane.set_resources("test", resources)


def _stream_type(board: StatusBoard, node_id: str, type_url: str) -> Any:
    for stream in board.streams.values():
        if stream.node_id == node_id and type_url in stream.types:
            return stream.types[type_url]
    return None


async def _until(plane: ControlPlane, predicate: Any) -> None:
    async with asyncio.timeout(WAIT):
        await plane.wait_until(predicate)


async def test_wildcard_cds_and_lds_get_everything(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    _publish(plane)
    stream = SotwStream(channel)
    cds = await stream.fetch(CLUSTER)
    assert cds.version_info == plane.cache.snapshot("test").version(CLUSTER)  # type: ignore[union-attr]
    [packed] = cds.resources
    cluster = cluster_pb2.Cluster()
    packed.Unpack(cluster)
    assert cluster.name == "C"
    lds = await stream.fetch(LISTENER)
    assert [a.type_url for a in lds.resources] == [LISTENER]
    assert cds.nonce != lds.nonce
    stream.close()


async def test_named_rds_and_eds(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    _publish(plane, extra={ENDPOINT: {"other": r.assignment("other", ("10.0.0.2", 1))}})
    stream = SotwStream(channel)
    eds = await stream.fetch(ENDPOINT, ["C"])
    [packed] = eds.resources
    assignment = endpoint_pb2.ClusterLoadAssignment()
    packed.Unpack(assignment)
    assert assignment.cluster_name == "C"  # "other" was not asked for
    rds = await stream.fetch(ROUTE, [ROUTE_NAME])
    assert len(rds.resources) == 1
    absent = await stream.fetch(ENDPOINT, ["C", "missing"])  # a grown subscription is answered at once
    assert len(absent.resources) == 1
    stream.close()


async def test_ack_updates_the_acked_version(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    _publish(plane)
    stream = SotwStream(channel)
    cds = await stream.fetch(CLUSTER)

    def acked(board: StatusBoard) -> bool:
        t = _stream_type(board, "node-1", CLUSTER)
        return t is not None and t.version_acked == cds.version_info

    await _until(plane, acked)
    [status] = plane.status()["streams"]
    assert status["node_id"] == "node-1"
    assert status["user_agent"] == "gRPC C-core/1.85.1"
    assert status["group"] == "test"
    assert status["types"][CLUSTER]["state"] == "SYNCED"
    assert status["types"][CLUSTER]["last_nack"] is None
    stream.close()


async def test_nack_is_recorded_and_the_version_not_resent(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    _publish(plane)
    stream = SotwStream(channel)
    stream.request(CLUSTER)
    cds = await stream.recv()
    stream.nack(cds, "cluster C: unsupported lb_policy")

    def nacked(board: StatusBoard) -> bool:
        t = _stream_type(board, "node-1", CLUSTER)
        return t is not None and t.nack_error is not None

    await _until(plane, nacked)
    status = plane.status()["streams"][0]["types"][CLUSTER]
    assert status["state"] == "NACKED"
    assert status["last_nack"]["error"] == "cluster C: unsupported lb_policy"
    assert status["last_nack"]["version"] == cds.version_info
    assert status["version_acked"] == ""
    assert "NACKED (cluster C: unsupported lb_policy)" in render_status_table(plane.status())
    # Requests are handled in order: had the NACKed CDS been resent, it would arrive before the LDS answer.
    lds = await stream.fetch(LISTENER)
    assert lds.type_url == LISTENER
    # A new version is sent again.
    _publish(plane, extra={CLUSTER: {"D": r.cluster("D")}, ENDPOINT: {"D": r.assignment("D", ("10.0.0.3", 1))}})
    update = await stream.recv()
    assert update.type_url == CLUSTER
    assert update.version_info != cds.version_info
    assert len(update.resources) == 2
    stream.close()


async def test_push_reaches_two_streams_of_one_node(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    _publish(plane, port=8080)
    streams = [SotwStream(channel), SotwStream(channel)]
    for stream in streams:
        await stream.fetch(CLUSTER)
        await stream.fetch(ENDPOINT, ["C"])
    _publish(plane, port=9090)  # only the endpoint changed
    new_version = plane.cache.snapshot("test").version(ENDPOINT)  # type: ignore[union-attr]
    for stream in streams:
        update = await stream.recv()
        assert update.type_url == ENDPOINT  # CDS did not change, so it is not resent
        assert update.version_info == new_version
        assignment = endpoint_pb2.ClusterLoadAssignment()
        update.resources[0].Unpack(assignment)
        assert assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value == 9090
        stream.ack(update, ["C"])
    await _until(plane, lambda board: board.count(ENDPOINT, version=new_version) == 2)
    ids = {s["node_id"] for s in plane.status()["streams"]}
    assert ids == {"node-1"}
    for stream in streams:
        stream.close()


async def test_named_stream_is_not_pushed_for_resources_it_did_not_ask_for(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    _publish(plane, extra={ENDPOINT: {"other": r.assignment("other", ("10.0.0.2", 1))}})
    stream = SotwStream(channel)
    await stream.fetch(ENDPOINT, ["C"])
    _publish(plane, extra={ENDPOINT: {"other": r.assignment("other", ("10.0.0.2", 2))}})
    lds = await stream.fetch(LISTENER)  # the next message is the LDS answer, not an EDS push
    assert lds.type_url == LISTENER
    stream.close()


async def test_stale_nonce_is_ignored(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    _publish(plane)
    stream = SotwStream(channel)
    first = await stream.fetch(CLUSTER)
    _publish(plane, extra={CLUSTER: {"D": r.cluster("D")}, ENDPOINT: {"D": r.assignment("D", ("10.0.0.3", 1))}})
    second = await stream.recv()
    stream.nack(first, "late NACK of an old response")  # stale: must not be recorded
    stream.ack(second)
    await _until(plane, lambda board: board.count(CLUSTER, version=second.version_info) == 1)
    assert plane.status()["streams"][0]["types"][CLUSTER]["last_nack"] is None
    stream.close()


async def test_first_request_without_node_is_rejected(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    stream = SotwStream(channel)
    stream.node = None
    stream.request(CLUSTER)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stream.recv()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_stream_waits_for_a_snapshot_then_gets_it(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    stream = SotwStream(channel)
    stream.request(CLUSTER)
    await _until(plane, lambda board: any(s.group == "test" for s in board.streams.values()))
    _publish(plane)
    cds = await stream.recv()
    assert len(cds.resources) == 1
    stream.close()


async def test_status_is_served_as_json_and_renders_as_a_table(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    _publish(plane)
    stream = SotwStream(channel)
    await stream.fetch(CLUSTER)
    await _until(plane, lambda board: board.count(CLUSTER) == 1)
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{plane.status_port}/status") as resp:
        assert resp.status == 200
        status = await resp.json()
    assert status["streams"][0]["node_id"] == "node-1"
    assert set(status["groups"]["test"]) == {CLUSTER, ENDPOINT, LISTENER, ROUTE}
    table = render_status_table(status).splitlines()
    assert table[0].split() == ["NODE", "CLIENT", "CDS", "LDS", "EDS", "RDS"]
    assert table[1].startswith("node-1")
    assert "SYNCED" in table[1]
    assert "NOT SENT" in table[1]
    stream.close()


async def test_snapshot_source_builds_on_connect_and_rebuilds_debounced() -> None:
    port = {"value": 8080}
    calls: list[str] = []

    def source(group: str) -> dict[str, dict[str, Any]]:
        calls.append(group)
        return r.service(TARGET, ("10.0.0.1", port["value"]))

    async with (
        ControlPlane(source, port=0, node_group=lambda node: "grpc", debounce_after=0.01) as cp,
        grpc.aio.insecure_channel(cp.address) as channel,
    ):
        stream = SotwStream(channel)
        await stream.fetch(ENDPOINT, ["C"])
        port["value"] = 9090
        for _ in range(3):
            cp.notify_changed()
        update = await stream.recv()
        assignment = endpoint_pb2.ClusterLoadAssignment()
        update.resources[0].Unpack(assignment)
        assert assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value == 9090
        assert calls == ["grpc", "grpc"]  # one build on connect, one debounced rebuild for three changes
        stream.close()
