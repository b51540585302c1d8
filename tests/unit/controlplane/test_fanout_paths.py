"""The control plane's per-stream push path: what a push and an ACK cost a stream, and that it stays correct."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from meshlib.controlplane import CLUSTER, ENDPOINT, ResourceSnapshot
from meshlib.controlplane.server_delta import DeltaSession
from meshlib.controlplane.server_sotw import SotwSession, _nonce_field
from meshlib.controlplane.status import StatusBoard, StreamStatus
from tests.unit.controlplane import resources as r


def _request(type_url: str, names: tuple[str, ...] = (), **fields: Any) -> Any:
    return discovery_pb2.DiscoveryRequest(
        node={"id": "n1", "user_agent_name": "gRPC C-core"}, type_url=type_url, resource_names=names, **fields
    )


@pytest.mark.parametrize("nonce", ["1", "42", "9" * 127, "9" * 128, "x" * 300])
def test_nonce_field_encodes_as_protobuf_does(nonce: str) -> None:
    assert _nonce_field(nonce) == discovery_pb2.DiscoveryResponse(nonce=nonce).SerializeToString()
    body = discovery_pb2.DiscoveryResponse(version_info="v", type_url=ENDPOINT).SerializeToString()
    assert discovery_pb2.DiscoveryResponse.FromString(body + _nonce_field(nonce)).nonce == nonce


def test_streams_asking_for_the_same_names_share_one_version_key() -> None:
    snap = ResourceSnapshot.build(r.service("svc.test:50051", ("10.0.0.1", 8080)))
    sessions = [SotwSession(StreamStatus("sotw", f"p{i}"), lambda node: "g") for i in range(3)]
    for session in sessions:
        session.on_request(_request(ENDPOINT, ("C", "absent")))
        assert len(session.responses(snap)) == 1
    keys = [session._subs[ENDPOINT].sent_key for session in sessions]
    assert keys[0] == (("C", snap.types[ENDPOINT].resources["C"].version),)
    assert keys[0] is keys[1] is keys[2]  # one tuple for every stream, not one each


def test_an_ack_owes_nothing_and_keeps_the_subscription_objects() -> None:
    snap = ResourceSnapshot.build(r.service("svc.test:50051", ("10.0.0.1", 8080)))
    session = SotwSession(StreamStatus("sotw", "p"), lambda node: "g")
    session.on_request(_request(ENDPOINT, ("C",)))
    assert session.owes_response()
    [raw] = session.responses(snap)
    assert not session.owes_response()
    sub = session._subs[ENDPOINT]
    names, subscribed = sub.names, session.status.types[ENDPOINT].subscribed
    response = discovery_pb2.DiscoveryResponse.FromString(raw)
    session.on_request(_request(ENDPOINT, ("C",), version_info=response.version_info, response_nonce=response.nonce))
    assert session.status.types[ENDPOINT].state == "SYNCED"
    assert not session.owes_response()
    assert sub.names is names and session.status.types[ENDPOINT].subscribed is subscribed
    session.on_request(_request(ENDPOINT, ("C", "D"), version_info=response.version_info,
                                response_nonce=response.nonce))
    assert session.owes_response()  # a new name is answered at once


def test_delta_session_owes_a_response_for_a_changed_subscription_only() -> None:
    snap = ResourceSnapshot.build(r.service("svc.test:50051", ("10.0.0.1", 8080)))
    session = DeltaSession(StreamStatus("delta", "p"), lambda node: "g")
    session.on_request(discovery_pb2.DeltaDiscoveryRequest(node={"id": "n1"}, type_url=CLUSTER))
    assert session.owes_response()
    [raw] = session.responses(snap)
    assert not session.owes_response()
    nonce = discovery_pb2.DeltaDiscoveryResponse.FromString(raw).nonce
    session.on_request(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=nonce))
    assert not session.owes_response()
    assert session.status.types[CLUSTER].state == "SYNCED"


@pytest.mark.asyncio
async def test_wait_until_sees_every_update_on_a_big_board() -> None:
    board = StatusBoard()
    streams = [StreamStatus("sotw", f"p{i}") for i in range(5000)]
    for stream in streams:
        board.register(stream)
        stream.type(ENDPOINT).sent("v2", "1", 1)

    async def ack_all() -> None:
        for start in range(0, len(streams), 500):
            for stream in streams[start:start + 500]:
                stream.type(ENDPOINT).acked("v2", "1")
            board.changed()
            await asyncio.sleep(0)

    acks = asyncio.create_task(ack_all())
    async with asyncio.timeout(30):
        await board.wait_until(lambda b: b.count(ENDPOINT, version="v2") == len(streams))
    await acks
    assert board.count(ENDPOINT, version="v2") == 5000
    assert board.count(ENDPOINT, version="v1") == 0
    assert board.count(ENDPOINT, state="STALE") == 0


@pytest.mark.asyncio
async def test_a_big_fanout_pauses_the_cyclic_collector_until_its_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from meshlib.config import gc_pause
    from meshlib.controlplane import SnapshotCache, cache

    released = asyncio.Event()
    real_pause = gc_pause.pause_gc

    def observed_pause() -> Callable[[], None]:
        release = real_pause()

        def end() -> None:
            release()
            released.set()

        return end

    monkeypatch.setattr(gc_pause, "pause_gc", observed_pause)
    monkeypatch.setattr(cache, "FANOUT_GC_PAUSE_STREAMS", 3)
    monkeypatch.setattr(cache, "FANOUT_GC_PAUSE_S", 0.01)
    snapshots = SnapshotCache(node_group=lambda node: "g")
    woken: list[int] = []
    snapshots.set_resources("g", r.service("svc.test:50051", ("10.0.0.1", 8080)))
    for i in range(2):
        snapshots.watch("g", lambda i=i: woken.append(i))  # type: ignore[misc]
    snapshots.set_resources("g", r.service("svc.test:50051", ("10.0.0.1", 8081)))
    assert woken == [0, 1] and gc.isenabled()  # two streams: no pause
    snapshots.watch("g", lambda: woken.append(2))
    snapshots.set_resources("g", r.service("svc.test:50051", ("10.0.0.1", 8082)))
    assert woken == [0, 1, 0, 1, 2]
    assert not gc.isenabled()  # paused for the push...
    async with asyncio.timeout(10):
        await released.wait()
    assert gc.isenabled()  # ...and back once its time is up
