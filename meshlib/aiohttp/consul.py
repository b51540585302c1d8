"""Register an aiohttp server with Consul for as long as it runs.

::

    app = web.Application()
    consul_registration(app, mesh, "web", 8080, address="10.0.0.7", check=HttpCheck("/health"))
    web.run_app(app, port=8080)

The service is registered on startup (with a TTL check kept alive by
default, or the check you pass) and deregistered as shutdown begins — before
in-flight requests finish, so callers stop picking this instance first. If the
process dies without shutting down, the agent removes it once the check has
been critical for ``DeregisterCriticalServiceAfter`` (one minute by default).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from meshlib.discovery.consul.client import ConsulError
from meshlib.discovery.consul.register import Registration, register_service

if TYPE_CHECKING:
    from meshlib.mesh import Mesh

__all__ = ["consul_registration"]

log = logging.getLogger("meshlib.consul")


def consul_registration(
    app: web.Application, mesh: Mesh | None, name: str, port: int | Callable[[], int], **options: Any
) -> web.AppKey[Registration]:
    """Register ``name`` on ``app`` startup, deregister on shutdown (cleanup as a fallback).

    ``port`` may be a callable read at startup. ``options`` are those of
    :func:`meshlib.discovery.consul.register.register_service` (``id``,
    ``address``, ``tags``, ``meta``, ``check``, ``client``). Returns the app key
    under which the :class:`Registration` is stored (``app[key]``).
    """
    key = web.AppKey(f"meshlib.consul.{name}.{id(app)}", Registration)

    async def register(app: web.Application) -> None:
        app[key] = await register_service(mesh, name, port() if callable(port) else port, **options)

    async def deregister(app: web.Application) -> None:
        registration = app.get(key)
        if registration is not None:
            try:
                await registration.deregister()
            except ConsulError as exc:  # shutdown goes on; the agent reaps it (DeregisterCriticalServiceAfter)
                log.warning("consul: deregistering %s failed: %s", registration.service_id, exc)

    app.on_startup.append(register)
    app.on_shutdown.append(deregister)
    app.on_cleanup.append(deregister)
    return key
