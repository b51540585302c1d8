"""The emulator's use of meshlib's discovery-chain compiler (optional, imported lazily).

Consul compiles every discovery chain a config-entry write touches and rejects
the write when one fails (e.g. a splitter on a ``tcp`` service: "does not
permit advanced routing or splitting behavior"); ``/v1/discovery-chain/:svc``
returns the compiled chain. Both come from meshlib's own compiler in
``meshlib.discovery.consul``; while that is unavailable the write-time check is
skipped and the endpoint answers 501.
"""

from __future__ import annotations

import importlib
from typing import Any

from meshlib.testing.consul.http_query import HttpProblem
from meshlib.testing.consul.state import CatalogStore

CHAIN_KINDS = ("service-router", "service-splitter", "service-resolver", "service-defaults", "proxy-defaults")


def _compiler_function(name: str) -> Any:
    try:
        module = importlib.import_module("meshlib.discovery.consul.chain")
    except ImportError:
        return None
    return getattr(module, name, None)


def _entries_with(store: CatalogStore, entry: dict[str, Any] | None) -> list[dict[str, Any]]:
    entries = {(k, n): e for (k, n), e in store.config_entries.items() if k in CHAIN_KINDS}
    if entry is not None and entry["Kind"] in CHAIN_KINDS:
        entries[(entry["Kind"], entry["Name"])] = entry
    return list(entries.values())


def write_time_problem(store: CatalogStore, entry: dict[str, Any]) -> str | None:
    """Why Consul would reject ``entry`` after compiling the chains it touches, or None."""
    chain_write_problem = _compiler_function("chain_write_problem")
    if chain_write_problem is None:
        return None
    problem: str | None = chain_write_problem(_entries_with(store, entry), entry, datacenter=store.datacenter)
    return problem


def render(store: CatalogStore, service: str, compile_dc: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"Chain": …}`` as ``/v1/discovery-chain/:service`` answers."""
    render_discovery_chain = _compiler_function("render_discovery_chain")
    if render_discovery_chain is None:
        raise HttpProblem(501, "discovery-chain is not available: meshlib's chain compiler is not installed")
    try:
        chain: dict[str, Any] = render_discovery_chain(
            _entries_with(store, None), service, datacenter=compile_dc, overrides=overrides)
    except ValueError as exc:
        raise HttpProblem(500, str(exc)) from None
    return chain
