"""Incremental (delta) ADS against a real grpc.aio client on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from meshlib.controlplane import CLUSTER, ENDPOINT, LISTENER, ControlPlane, StatusBoard
from tests.integration.controlplane.ads_client import WAIT, DeltaStream
from tests.unit.controlplane import resources as r

pytestmark = pytest.mark.asyncio

TARGET = "svc.test:50051"


def _publish(plane: ControlPlane, clusters: dict[str, int]) -> None:
    """Clusters by name, each an EDS cluster with one endpoint on the given port."""
    resources = r.service(TARGET, ("10.0.0.1", 8080))
    for name, port in clusters.items():
        resources[CLUSTER][name] = r.cluster(name)
        resources[ENDPOINT][name] = r.assignment(name, ("10.0.0.2", port))
    plane.set_resources("test", resources)


async def _until(plane: ControlPlane, predicate: Any) -> None:
    async with asyncio.timeout(WAIT):
        await plane.wait_until(predicate)


async def test_wildcard_sends_all_then_only_changes_and_removals(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    _publish(plane, {"A": 1, "B": 1})
    stream = DeltaStream(channel)
    stream.request(CLUSTER)
    first = await stream.recv()
    assert sorted(res.name for res in first.resources) == ["A", "B", "C"]
    assert all(res.version for res in first.resources)
    assert list(first.removed_resources) == []
    stream.ack(first)
    _publish(plane, {"A": 1})  # B removed; cluster resources A and C unchanged
    second = await stream.recv()
    assert [res.name for res in second.resources] == []
    assert list(second.removed_resources) == ["B"]
    stream.ack(second)
    await _until(plane, lambda board: board.count(CLUSTER, version=second.system_version_info) == 1)
    stream.close()


async def test_subscribe_unsubscribe_and_absent_names(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    _publish(plane, {"A": 1, "B": 1})
    stream = DeltaStream(channel)
    stream.request(ENDPOINT, ["A"])
    first = await stream.recv()
    assert [res.name for res in first.resources] == ["A"]
    stream.ack(first)
    stream.request(ENDPOINT, ["B", "nope"])
    second = await stream.recv()
    assert [res.name for res in second.resources] == ["B"]
    assert list(second.removed_resources) == ["nope"]  # "does not exist", at once
    stream.ack(second)
    stream.request(ENDPOINT, unsubscribe=["A"])

    def unsubscribed(board: StatusBoard) -> bool:
        return any(s.types[ENDPOINT].subscribed == ["B", "nope"] for s in board.streams.values())

    await _until(plane, unsubscribed)
    _publish(plane, {"A": 2, "B": 2})  # both changed, but A is no longer subscribed
    third = await stream.recv()
    assert [res.name for res in third.resources] == ["B"]
    stream.close()


async def test_initial_resource_versions_avoid_resending(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    _publish(plane, {"A": 1, "B": 1})
    have = {name: res.version for name, res in plane.cache.snapshot("test").types[CLUSTER].resources.items()}  # type: ignore[union-attr]
    stale = dict(have, B="old-version", gone="v1")
    stream = DeltaStream(channel)
    stream.request(CLUSTER, initial=stale)
    response = await stream.recv()
    assert [res.name for res in response.resources] == ["B"]  # A and C are up to date
    assert list(response.removed_resources) == ["gone"]
    stream.close()

    again = DeltaStream(channel, node_id="node-2")
    again.request(CLUSTER, initial=have)  # holds everything: nothing owed
    again.request(LISTENER)
    probe = await again.recv()
    assert probe.type_url == LISTENER
    again.close()


async def test_delta_nack_is_recorded(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    _publish(plane, {})
    stream = DeltaStream(channel)
    stream.request(CLUSTER)
    response = await stream.recv()
    stream.request(CLUSTER, nonce=response.nonce, error="cluster C rejected")

    def nacked(board: StatusBoard) -> bool:
        return any(s.protocol == "delta" and CLUSTER in s.types and s.types[CLUSTER].nack_error
                   for s in board.streams.values())

    await _until(plane, nacked)
    [status] = plane.status()["streams"]
    assert status["protocol"] == "delta"
    assert status["types"][CLUSTER]["state"] == "NACKED"
    assert status["types"][CLUSTER]["last_nack"]["error"] == "cluster C rejected"
    stream.request(LISTENER)  # the rejected resources are not resent: the next message is the LDS answer
    probe = await stream.recv()
    assert probe.type_url == LISTENER
    stream.close()
