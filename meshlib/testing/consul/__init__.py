"""A Consul HTTP API emulator for tests: ``ConsulEmulator``.

A real Consul agent cannot be installed everywhere tests run, so meshlib ships
an in-process emulator of the parts of Consul's HTTP API that service-discovery
clients and registration helpers use. It is an aiohttp app on loopback with an
in-memory catalog, built from Consul's Go structs and documented samples, and
checked by a contract suite (``tests/contract/consul``) that runs the same tests
against a real agent when ``CONSUL_HTTP_ADDR`` is set.

>>> import asyncio
>>> from meshlib.testing.consul import ConsulEmulator
>>> async def main() -> list[str]:
...     async with ConsulEmulator() as consul:          # 127.0.0.1:<free port>
...         consul.add_service("web", 8080, tags=["v1"])
...         import aiohttp
...         async with aiohttp.ClientSession() as http:
...             async with http.get(f"{consul.url}/v1/health/service/web?passing") as resp:
...                 return [e["Service"]["ID"] for e in await resp.json()]
>>> asyncio.run(main())
['web-127.0.0.1-8080']

Implemented (shapes, status codes and messages as Consul answers them):

- ``GET /v1/health/service/:svc`` (``passing``, ``tag``, ``node-meta``, ``filter``,
  ``dc``, ``stale``/``consistent``/``cached``), ``/v1/health/checks/:svc``;
  ``GET /v1/catalog/{services,service/:svc,nodes,datacenters}``,
  ``PUT /v1/catalog/{register,deregister}``;
- ``/v1/agent/{self,services,service/:id,checks}``, ``service/register``
  (any key case, ``Check``/``Checks``, ``?replace-existing-checks``),
  ``service/deregister/:id``, ``service/maintenance/:id``, ``maintenance``,
  ``check/{register,deregister,pass,warn,fail,update}``; TTL, HTTP and TCP
  checks really run, ``DeregisterCriticalServiceAfter`` reaps;
- ``PUT /v1/config`` (``cas``), ``GET /v1/config/:kind[/:name]``,
  ``DELETE /v1/config/:kind/:name``; write-time validation of router,
  splitter, resolver and proxy-defaults entries;
- ``/v1/discovery-chain/:svc`` and chain checks at write time through
  meshlib's chain compiler (501 while it is not installed);
- blocking queries (``index``/``wait``, ``wait/16`` jitter, per-endpoint
  indexes, never 0), ``X-Consul-*`` headers, ACL tokens (:class:`AclToken`);
- test controls: :meth:`ConsulEmulator.add_service`, ``set_check_status``,
  ``set_node_status``, ``set_node_locality``, ``set_config_entry``,
  ``go_down("refuse"|"no-leader"|"error")`` / ``come_back``, ``restore_snapshot``,
  ``set_latency``, ``request_counts`` / ``count``, ``wait_blocked``,
  ``advance`` (with :class:`ManualClock`), several datacenters; the same over
  HTTP under ``/_emulator/`` (:mod:`meshlib.testing.consul.control`).

What it does not do, and where it differs, is listed in ``docs/consul-emulator.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshlib.testing.consul.acl import AclToken
    from meshlib.testing.consul.checks import ManualClock
    from meshlib.testing.consul.emulator import ConsulEmulator, RequestRecord
    from meshlib.testing.consul.fixtures import consul_emulator, consul_emulator_in_thread

__all__ = ["AclToken", "ConsulEmulator", "ManualClock", "RequestRecord", "consul_emulator",
           "consul_emulator_in_thread"]

_HOMES = {
    "AclToken": "acl", "ManualClock": "checks", "ConsulEmulator": "emulator", "RequestRecord": "emulator",
    "consul_emulator": "fixtures", "consul_emulator_in_thread": "fixtures",
}


def __getattr__(name: str) -> Any:
    # Lazy, so `meshlib --help` (which registers `meshlib consul-dev`) does not import aiohttp's server.
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
