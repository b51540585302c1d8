"""gRPC through a Consul-sourced mesh: ``mesh.grpc_channel`` routed by Consul's router, splitter and resolver."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from meshlib.mesh import Mesh
from meshlib.testing.consul import ConsulEmulator
from tests.integration.consul.conftest import until
from tests.integration.grpc_channels.conftest import GrpcBackendFactory, grpc_backend

pytestmark = pytest.mark.asyncio
__all__ = ["grpc_backend"]  # the fixture, imported for this module

TARGET = "reviews.service.consul:80"


def grpc_services(consul: ConsulEmulator, v1: int, v2: int) -> None:
    consul.add_service("reviews", v1, service_id="reviews-v1", tags=["v1"])
    consul.add_service("reviews", v2, service_id="reviews-v2", tags=["v2"])
    consul.set_config_entry({"Kind": "service-defaults", "Name": "reviews", "Protocol": "grpc"})
    consul.set_config_entry({
        "Kind": "service-resolver", "Name": "reviews", "DefaultSubset": "v1",
        "Subsets": {"v1": {"Filter": '"v1" in Service.Tags'}, "v2": {"Filter": '"v2" in Service.Tags'}},
        "Failover": {"v2": {"ServiceSubset": "v1"}},
    })


async def test_grpc_calls_follow_router_splitter_and_failover(
    consul: ConsulEmulator, grpc_backend: GrpcBackendFactory
) -> None:
    v1, v2 = await grpc_backend("v1"), await grpc_backend("v2")
    grpc_services(consul, v1.port, v2.port)
    consul.set_config_entry({
        "Kind": "service-router", "Name": "reviews", "Routes": [
            {"Match": {"HTTP": {"PathPrefix": "/pkg.Admin/"}}, "Destination": {"ServiceSubset": "v2"}},
            {"Match": {"HTTP": {"Header": [{"Name": "x-canary", "Exact": "yes"}]}},
             "Destination": {"ServiceSubset": "v2"}},
        ],
    })
    consul.set_config_entry({
        "Kind": "service-splitter", "Name": "reviews",
        "Splits": [{"Weight": 75, "ServiceSubset": "v1"}, {"Weight": 25, "ServiceSubset": "v2"}],
    })
    mesh = Mesh.from_consul(consul.address, rng=random.Random(12))
    async with mesh, mesh.grpc_channel(TARGET) as channel:
        echo = channel.unary_unary("/pkg.Svc/Echo")
        admin = channel.unary_unary("/pkg.Admin/Echo")
        assert {await admin(b"x") for _ in range(5)} == {b"v2:x"}  # method path route
        assert {await echo(b"x", metadata=(("x-canary", "yes"),)) for _ in range(5)} == {b"v2:x"}  # header route
        split = Counter([await echo(b"x") for _ in range(200)])
        assert set(split) == {b"v1:x", b"v2:x"} and 20 <= split[b"v2:x"] <= 90, split  # 25 % of 200 = 50
        consul.set_check_status("reviews-v2", "critical")
        await until(mesh, lambda: all(
            v2.address not in eps
            for eps in mesh.explain("POST", "http://reviews.service.consul/pkg.Admin/Echo")["endpoints"].values()
        ))
        assert {await admin(b"y") for _ in range(5)} == {b"v1:y"}  # v2's instances critical → failover to v1
