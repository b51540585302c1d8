"""meshlib.aiohttp

``consul_registration(app, mesh, name, port, ...)`` (imported lazily) registers an
aiohttp server with Consul for as long as it runs (:mod:`meshlib.aiohttp.consul`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["consul_registration"]


def __getattr__(name: str) -> Any:
    if name == "consul_registration":
        from meshlib.aiohttp.consul import consul_registration

        return consul_registration
    raise AttributeError(f"module 'meshlib.aiohttp' has no attribute {name!r}")
