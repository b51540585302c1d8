"""One read of Consul, for the command line (``meshlib validate --consul``, ``meshlib explain --consul``).

:func:`read_consul_state` issues plain (non-blocking) reads — the catalog,
each service's health, the five config-entry kinds — at most 32 at a time,
and assembles the same :class:`ConsulState` the live source would.
:func:`validate_consul` compiles it and returns every problem (entry kind,
name and field); :func:`explain_consul` answers ``explain`` for one request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from meshlib.config.model import WorkloadIdentity
from meshlib.discovery.consul.client import ConsulClient, ConsulError, ConsulSettings
from meshlib.discovery.consul.source import CATALOG_PATH, CONFIG_KINDS, consul_source_of
from meshlib.discovery.consul.state import ConsulState
from meshlib.errors import ConfigProblem

__all__ = ["explain_consul", "read_consul_state", "validate_consul"]

MAX_CONCURRENT_READS = 32


async def _read_json(client: ConsulClient, path: str, params: Sequence[tuple[str, str]]) -> Any:
    response = await client.get(path, params)
    if response.status != 200:
        raise ConsulError(f"GET {path}: {response.status} {response.body.strip()[:200]}", status=response.status)
    return response.json()


async def read_consul_state(
    client: ConsulClient, *, services: Sequence[str] | None = None, stale: bool = True, datacenter: str | None = None
) -> ConsulState:
    """Everything meshlib reads from Consul, once; :class:`ConsulError` when Consul cannot answer."""
    params = [("stale", "")] if stale else []
    if services is None:
        catalog = await _read_json(client, CATALOG_PATH, params)
        if not isinstance(catalog, dict):
            raise ConsulError(f"GET {CATALOG_PATH}: want a JSON object of service names")
        services = sorted(catalog)
    limit = asyncio.Semaphore(MAX_CONCURRENT_READS)

    async def read(path: str) -> Any:
        async with limit:
            return await _read_json(client, path, params)

    names = sorted(set(services))
    health = await asyncio.gather(*(read(f"/v1/health/service/{name}") for name in names))
    entries = await asyncio.gather(*(read(f"/v1/config/{kind}") for kind in CONFIG_KINDS))
    service_map = {name: list(found or []) for name, found in zip(names, health, strict=True)}
    dc = datacenter or next(
        (
            str(entry["Node"]["Datacenter"])
            for found in service_map.values()
            for entry in found
            if isinstance(entry, dict) and isinstance(entry.get("Node"), dict) and entry["Node"].get("Datacenter")
        ),
        "dc1",
    )
    config_entries = {kind: list(found or []) for kind, found in zip(CONFIG_KINDS, entries, strict=True)}
    return ConsulState(dc, service_map, config_entries)


async def validate_consul(
    address: str | None = None,
    *,
    token: str | None = None,
    dc: str | None = None,
    services: Sequence[str] | None = None,
    workload: WorkloadIdentity | None = None,
) -> tuple[ConsulState, list[ConfigProblem]]:
    """Read Consul once and compile it; every problem names the entry kind, name and field."""
    from meshlib.discovery.consul.compile import compile_consul

    async with ConsulClient(ConsulSettings.resolve(address, token=token, dc=dc)) as client:
        state = await read_consul_state(client, services=services, datacenter=dc)
    _, problems = await asyncio.to_thread(compile_consul, state, workload or WorkloadIdentity())
    return state, problems


async def explain_consul(
    method: str,
    url: str,
    headers: Mapping[str, str],
    *,
    address: str | None = None,
    token: str | None = None,
    dc: str | None = None,
    namespace: str = "default",
    overlay: Sequence[str] = (),
) -> dict[str, Any]:
    """``explain`` on the configuration Consul holds now (plus an Istio overlay)."""
    from meshlib.mesh import Mesh

    mesh = Mesh.from_consul(address, token=token, dc=dc, namespace=namespace, overlay=list(overlay) or None)
    source = consul_source_of(mesh)
    async with mesh:
        if not source.synced:
            errors = source.status()["last_error"]
            raise ConsulError("no configuration from Consul: " + ("; ".join(errors) or "no answer in time"))
        result = mesh.explain(method, url, headers)
        problems = [str(p) for p in source.problems]
    if problems:
        result["consul_problems"] = problems
    return result
