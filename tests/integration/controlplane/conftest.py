"""A started ControlPlane on loopback (ephemeral ports) and a grpc.aio channel to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest_asyncio

from meshlib.controlplane import ControlPlane


@pytest_asyncio.fixture
async def plane() -> AsyncIterator[ControlPlane]:
    async with ControlPlane(port=0, status_port=0, node_group=lambda node: "test") as cp:
        yield cp


@pytest_asyncio.fixture
async def channel(plane: ControlPlane) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(plane.address) as ch:
        yield ch
