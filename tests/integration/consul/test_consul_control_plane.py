"""``meshlib control-plane --consul``: Consul's configuration over xDS to grpcio's native xDS client; replicas agree."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from meshlib.controlplane import ControlPlane
from meshlib.controlplane.consul_source import ConsulSnapshotSource
from meshlib.testing.consul import ConsulEmulator
from meshlib.xds import grpc_bootstrap
from tests.interop.grpc_xds_client import GrpcXdsClient

pytestmark = pytest.mark.asyncio

METHOD = "/test.Reviews/Version"
TARGET = "xds:///reviews.service.consul:80"


@pytest_asyncio.fixture
async def versions() -> AsyncIterator[dict[str, int]]:
    """Two grpc.aio servers answering ``/test.Reviews/Version`` with ``v1`` / ``v2``."""
    servers: list[grpc.aio.Server] = []
    ports: dict[str, int] = {}
    for version in ("v1", "v2"):

        async def answer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes], v: str = version) -> bytes:
            return v.encode()

        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "test.Reviews", {"Version": grpc.unary_unary_rpc_method_handler(answer)}),))
        ports[version] = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
    yield ports
    for server in servers:
        await server.stop(None)


def reviews_in_consul(consul: ConsulEmulator, ports: dict[str, int], v2_weight: int) -> None:
    consul.add_service("reviews", ports["v1"], service_id="reviews-v1", tags=["v1"])
    consul.add_service("reviews", ports["v2"], service_id="reviews-v2", tags=["v2"])
    consul.set_config_entry({"Kind": "service-defaults", "Name": "reviews", "Protocol": "grpc"})
    consul.set_config_entry({
        "Kind": "service-resolver", "Name": "reviews", "DefaultSubset": "v1",
        "Subsets": {"v1": {"Filter": '"v1" in Service.Tags'}, "v2": {"Filter": '"v2" in Service.Tags'}},
    })
    consul.set_config_entry({
        "Kind": "service-router", "Name": "reviews", "Routes": [
            {"Match": {"HTTP": {"Header": [{"Name": "x-canary", "Exact": "true"}]}},
             "Destination": {"ServiceSubset": "v2"}}],
    })
    split(consul, v2_weight)


def split(consul: ConsulEmulator, v2_weight: int) -> None:
    consul.set_config_entry({
        "Kind": "service-splitter", "Name": "reviews",
        "Splits": [{"Weight": 100 - v2_weight, "ServiceSubset": "v1"}, {"Weight": v2_weight, "ServiceSubset": "v2"}],
    })


@contextlib.asynccontextmanager
async def replica(consul: ConsulEmulator) -> AsyncIterator[tuple[ControlPlane, ConsulSnapshotSource]]:
    source = ConsulSnapshotSource(consul.address)
    assert await source.start()
    async with ControlPlane(source, port=0, status_port=0) as plane:
        source.attach(plane)
        watcher = asyncio.create_task(source.watch())
        try:
            yield plane, source
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def resource_versions(source: ConsulSnapshotSource, group: str) -> dict[str, dict[str, bytes]]:
    resources = source(group)
    assert resources is not None
    return {url: {name: msg.SerializeToString(deterministic=True) for name, msg in found.items()}
            for url, found in resources.items()}


async def test_two_replicas_serve_identical_snapshots(consul: ConsulEmulator, versions: dict[str, int]) -> None:
    reviews_in_consul(consul, versions, v2_weight=10)
    async with replica(consul) as (plane_a, a), replica(consul) as (plane_b, b):
        assert a.snapshot is not None and b.snapshot is not None
        assert a.snapshot.version == b.snapshot.version
        for group in ("GRPC_PROXYLESS", "ENVOY", "MESHLIB"):
            assert resource_versions(a, group) == resource_versions(b, group)
            built_a = plane_a.set_resources(group, a(group) or {})
            built_b = plane_b.set_resources(group, b(group) or {})
            assert {u: t.version for u, t in built_a.types.items()} == {u: t.version for u, t in built_b.types.items()}
        first = a.snapshot.version
        split(consul, 50)

        async def moved(source: ConsulSnapshotSource) -> None:
            while source.snapshot is None or source.snapshot.version == first:
                await source.consul.wait_for_publish(source.consul.publishes)

        async with asyncio.timeout(10):
            await asyncio.gather(moved(a), moved(b))
        assert a.snapshot.version == b.snapshot.version != first
        assert plane_a.status()["config_version"] == plane_b.status()["config_version"] == a.snapshot.version


@pytest.mark.slow
async def test_grpcio_native_xds_client_routes_by_consul_config(
    consul: ConsulEmulator, versions: dict[str, int]
) -> None:
    reviews_in_consul(consul, versions, v2_weight=0)
    async with replica(consul) as (plane, _):
        bootstrap = grpc_bootstrap(plane.address, "grpcio-consul", cluster="interop")
        async with GrpcXdsClient(TARGET, METHOD, bootstrap) as client:
            try:
                assert set(await client.calls(10)) == {"v1"}
                assert set(await client.calls(10, {"x-canary": "true"})) == {"v2"}
                split(consul, 50)
                async with asyncio.timeout(15):
                    while "v2" not in await client.calls(5):
                        pass
                seen = Counter(await client.calls(60))
                assert set(seen) == {"v1", "v2"} and min(seen.values()) >= 10, seen
                consul.set_check_status("reviews-v2", "critical")  # the resolver's v2 subset empties
                async with asyncio.timeout(15):
                    while "v2" in await client.calls(10, {"x-canary": "true"}):
                        pass
            except BaseException:
                print(await client.stderr_tail())
                raise
        status = plane.status()
        assert status["config_source"] == "consul"
        assert status["config_errors"] == []
        assert status["consul"]["connected"] is True
