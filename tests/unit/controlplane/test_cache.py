"""Snapshot cache: versions, reuse of unchanged objects, consistency, watchers, serialised once."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2

from meshlib.controlplane import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    InconsistentSnapshot,
    ResourceSnapshot,
    SnapshotCache,
    TypeResources,
    default_references,
)
from meshlib.controlplane.server_sotw import SotwSession
from meshlib.controlplane.status import StreamStatus
from tests.unit.controlplane import resources as r


def _svc(port: int = 8080) -> dict[str, dict[str, Any]]:
    return r.service("svc.test:50051", ("10.0.0.1", port))


def test_versions_are_per_type_and_follow_content() -> None:
    first = ResourceSnapshot.build(_svc(8080))
    same = ResourceSnapshot.build(_svc(8080))
    moved = ResourceSnapshot.build(_svc(9090), previous=first)
    assert {t: first.version(t) for t in first.types} == {t: same.version(t) for t in same.types}
    assert moved.version(ENDPOINT) != first.version(ENDPOINT)
    for unchanged in (LISTENER, ROUTE, CLUSTER):
        # An unchanged type keeps its version and its very objects (no re-encoding, no push).
        assert moved.types[unchanged] is first.types[unchanged]


def test_unchanged_resources_keep_their_packed_object_across_versions() -> None:
    first = ResourceSnapshot.build({ENDPOINT: {"a": r.assignment("a", ("10.0.0.1", 1)),
                                               "b": r.assignment("b", ("10.0.0.2", 1))}})
    second = ResourceSnapshot.build({ENDPOINT: {"a": r.assignment("a", ("10.0.0.1", 1)),
                                                "b": r.assignment("b", ("10.0.0.9", 1))}}, previous=first)
    assert second.version(ENDPOINT) != first.version(ENDPOINT)
    assert second.types[ENDPOINT].resources["a"] is first.types[ENDPOINT].resources["a"]
    assert second.types[ENDPOINT].resources["b"].version != first.types[ENDPOINT].resources["b"].version


def test_packed_any_round_trips() -> None:
    snap = ResourceSnapshot.build(_svc())
    packed = snap.types[CLUSTER].resources["C"].any
    decoded = cluster_pb2.Cluster()
    assert packed.Unpack(decoded)
    assert decoded.name == "C"
    assert packed.type_url == CLUSTER


def test_missing_type_is_empty_with_a_stable_version() -> None:
    snap = ResourceSnapshot.build({})
    assert snap.get(LISTENER).resources == {}
    assert snap.get(LISTENER) is snap.get(LISTENER)
    assert snap.version(LISTENER) == ResourceSnapshot.build({LISTENER: {}}).version(LISTENER)


def test_consistency_reports_missing_route_and_endpoint_names() -> None:
    resources = _svc()
    assert ResourceSnapshot.build(resources).consistent() == []
    del resources[ROUTE]
    resources[ENDPOINT] = {}
    problems = ResourceSnapshot.build(resources).consistent()
    assert problems == [
        "EDS resources referenced but missing: C",
        "RDS resources referenced but missing: route-svc.test:50051",
    ]


def test_eds_service_name_is_the_reference() -> None:
    refs = list(default_references(CLUSTER, r.cluster("outbound|80||a", service_name="a-eds")))
    assert refs == [(ENDPOINT, "a-eds")]
    static = cluster_pb2.Cluster(name="s", type=cluster_pb2.Cluster.STATIC)
    assert list(default_references(CLUSTER, static)) == []


def test_reference_extraction_is_pluggable() -> None:
    def refs(type_url: str, message: Any) -> list[tuple[str, str]]:
        return [(ROUTE, "custom")] if type_url == CLUSTER else []

    snap = ResourceSnapshot.build({CLUSTER: {"C": r.cluster("C")}}, references=refs)
    assert snap.consistent() == ["RDS resources referenced but missing: custom"]


def test_set_resources_can_require_consistency() -> None:
    cache = SnapshotCache(lambda node: "g")
    with pytest.raises(InconsistentSnapshot, match="route-svc"):
        cache.set_resources("g", {LISTENER: _svc()[LISTENER]}, require_consistent=True)
    assert cache.snapshot("g") is None


def test_watchers_are_told_of_changes_only() -> None:
    cache = SnapshotCache(lambda node: "g")
    calls: list[str] = []
    cancel = cache.watch("g", lambda: calls.append("g"))
    cache.watch("other", lambda: calls.append("other"))
    cache.set_resources("g", _svc(1))
    cache.set_resources("g", _svc(1))  # identical: nothing to push
    cache.set_resources("g", _svc(2))
    assert calls == ["g", "g"]
    cancel()
    cache.set_resources("g", _svc(3))
    assert calls == ["g", "g"]
    assert cache.groups() == ["g", "other"]


def test_missing_group_asks_for_a_build() -> None:
    asked: list[str] = []
    cache = SnapshotCache(lambda node: "g", on_missing=asked.append)
    cache.watch("grpc", lambda: None)
    cache.set_resources("envoy", {})
    cache.watch("envoy", lambda: None)
    assert asked == ["grpc"]


def _request(type_url: str, names: tuple[str, ...] = ()) -> Any:
    return discovery_pb2.DiscoveryRequest(
        node={"id": "n1", "user_agent_name": "gRPC C-core"}, type_url=type_url, resource_names=names
    )


def test_two_streams_share_the_same_serialised_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    snap = ResourceSnapshot.build(_svc())
    picked: list[tuple[str, bytes]] = []
    original = TypeResources.sotw_body

    def spy(self: TypeResources, names: frozenset[str] | None) -> bytes:
        body = original(self, names)
        picked.append((self.type_url, body))
        return body

    monkeypatch.setattr(TypeResources, "sotw_body", spy)
    streams = [SotwSession(StreamStatus("sotw", f"peer{i}"), lambda node: "g") for i in range(2)]
    for session in streams:
        session.on_request(_request(CLUSTER))
        session.on_request(_request(ENDPOINT, ("C",)))
        assert len(session.responses(snap)) == 2
    by_type: dict[str, list[bytes]] = {}
    for type_url, body in picked:
        by_type.setdefault(type_url, []).append(body)
    # Each stream's response is the one shared encoded body (version, type, packed Anys) plus its nonce.
    assert by_type[CLUSTER][0] is by_type[CLUSTER][1]
    assert by_type[ENDPOINT][0] is by_type[ENDPOINT][1]
    # ... and the body carries the Any packed once in the snapshot, which every lookup returns as one object.
    assert snap.get(CLUSTER).resources["C"].any is snap.types[CLUSTER].resources["C"].any
    decoded = discovery_pb2.DiscoveryResponse.FromString(by_type[CLUSTER][0])
    assert decoded.resources[0] == snap.types[CLUSTER].resources["C"].any


def test_encoded_response_is_a_valid_discovery_response() -> None:
    snap = ResourceSnapshot.build(_svc())
    session = SotwSession(StreamStatus("sotw", "p"), lambda node: "g")
    session.on_request(_request(ENDPOINT, ("C", "absent")))
    [raw] = session.responses(snap)
    response = discovery_pb2.DiscoveryResponse.FromString(raw)
    assert response.type_url == ENDPOINT
    assert response.version_info == snap.version(ENDPOINT)
    assert response.nonce == "1"
    assert [a.type_url for a in response.resources] == [ENDPOINT]
    assert session.responses(snap) == []  # nothing changed, nothing owed


def test_unsubscribing_every_name_stops_pushes() -> None:
    session = SotwSession(StreamStatus("sotw", "p"), lambda node: "g")
    session.on_request(_request(ENDPOINT, ("C",)))
    assert len(session.responses(ResourceSnapshot.build(_svc(1)))) == 1
    session.on_request(_request(ENDPOINT, ()))  # named type: an empty list unsubscribes, it is no wildcard
    assert session.responses(ResourceSnapshot.build(_svc(2))) == []
    session.on_request(_request(ENDPOINT, ("C",)))  # subscribing again is answered at once
    assert len(session.responses(ResourceSnapshot.build(_svc(2)))) == 1


def test_legacy_wildcard_stays_wildcard_on_later_empty_requests() -> None:
    session = SotwSession(StreamStatus("sotw", "p"), lambda node: "g")
    session.on_request(_request(CLUSTER))
    snap = ResourceSnapshot.build(_svc())
    [raw] = session.responses(snap)
    response = discovery_pb2.DiscoveryResponse.FromString(raw)
    ack = discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info=response.version_info, response_nonce="1")
    session.on_request(ack)
    assert session.status.types[CLUSTER].state == "SYNCED"
    assert session.status.types[CLUSTER].subscribed is None
    more = dict(_svc())
    more[CLUSTER] = {**more[CLUSTER], "D": r.cluster("D")}
    [update] = session.responses(ResourceSnapshot.build(more))
    assert len(discovery_pb2.DiscoveryResponse.FromString(update).resources) == 2
