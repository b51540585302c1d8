"""Register a gRPC server with Consul while it serves.

::

    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:50051")
    await server.start()
    async with consul_grpc_registration(mesh, "reviews", port, address="127.0.0.1"):
        await server.wait_for_termination()

The default check is a TTL check kept alive by this process; pass
``check=GrpcCheck()`` when the server implements ``grpc.health.v1.Health``
and the agent should call it instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from meshlib.discovery.consul.client import ConsulError
from meshlib.discovery.consul.register import Registration, register_service

if TYPE_CHECKING:
    from meshlib.mesh import Mesh

__all__ = ["consul_grpc_registration"]

log = logging.getLogger("meshlib.consul")


@contextlib.asynccontextmanager
async def consul_grpc_registration(
    mesh: Mesh | None, name: str, port: int, **options: Any
) -> AsyncIterator[Registration]:
    """Registered on entry, deregistered on exit (also on an exception or cancellation)."""
    registration = await register_service(mesh, name, port, **options)
    try:
        yield registration
    finally:
        try:
            await registration.deregister()
        except ConsulError as exc:  # never mask the block's own outcome; the agent reaps the instance
            log.warning("consul: deregistering %s failed: %s", registration.service_id, exc)
