"""Status states and the istioctl-style table."""

from __future__ import annotations

import asyncio

import pytest

from meshlib.controlplane import CLUSTER, ENDPOINT, LISTENER, ROUTE, StatusBoard, StreamStatus, render_status_table


def _stream(node_id: str) -> StreamStatus:
    stream = StreamStatus("sotw", "ipv4:127.0.0.1:1")
    stream.node_id, stream.user_agent, stream.group = node_id, "gRPC C-core/1.85.1", "grpc"
    return stream


def test_states_follow_the_last_nonce() -> None:
    t = StreamStatus("sotw", "p").type(CLUSTER)
    assert t.state == "NOT SENT"
    t.sent("v1", "1", 3)
    assert t.state == "STALE"
    t.acked("v1", "1")
    assert t.state == "SYNCED"
    t.sent("v2", "2", 3)
    t.nacked("v2", "2", "bad")
    assert t.state == "NACKED"
    assert t.version_acked == "v1"  # the client keeps running the last version it accepted
    t.sent("v3", "3", 3)
    assert t.state == "STALE"
    assert t.to_dict()["last_nack"]["error"] == "bad"


def test_table_has_istioctl_columns_and_markers() -> None:
    board = StatusBoard()
    a, b = _stream("productpage-1"), _stream("reviews-1")
    for stream in (a, b):
        board.register(stream)
    a.type(CLUSTER).sent("abcdef0123456789", "1", 1)
    a.type(CLUSTER).acked("abcdef0123456789", "1")
    a.type(LISTENER).sent("v", "2", 1)
    b.type(ENDPOINT).sent("v", "1", 1)
    b.type(ENDPOINT).nacked("v", "1", "field:endpoints[0].locality error:field not present")
    lines = render_status_table(board.to_dict()).splitlines()
    assert lines[0].split() == ["NODE", "CLIENT", "CDS", "LDS", "EDS", "RDS"]
    assert lines[1].startswith("productpage-1")
    assert "SYNCED (abcdef01)" in lines[1]
    assert "STALE" in lines[1]
    assert "NACKED (field:endpoints[0].locality error:field not present)" in lines[2]
    assert "NOT SENT" in lines[2]
    assert ROUTE not in board.to_dict()["streams"][0]["types"]


@pytest.mark.asyncio
async def test_wait_until_wakes_on_changes() -> None:
    board = StatusBoard()
    stream = _stream("n")

    async def connect() -> None:
        board.register(stream)

    task = asyncio.create_task(connect())
    async with asyncio.timeout(5):
        await board.wait_until(lambda b: len(b.streams) == 1)
    await task
