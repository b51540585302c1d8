"""The emulator's use of meshlib's discovery-chain compiler (imported lazily).

Consul compiles the discovery chains a config-entry write affects and rejects
the write when one of them no longer compiles (a splitter on a ``tcp``
service: "does not permit advanced routing or splitting behavior", an unknown
subset, a redirect loop, mixed protocols), and ``/v1/discovery-chain/:svc``
returns the compiled chain. Both come from meshlib's own compiler
(``meshlib.discovery.consul.chain``); without it the write-time check is
skipped and the endpoint answers 501.

Only chains that compiled before the write and fail after it (or the chain of
the written entry's own service) block the write, so an unrelated broken chain
does not make every write fail.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from meshlib.testing.consul.http_query import HttpProblem
from meshlib.testing.consul.state import CatalogStore

CHAIN_KINDS = ("service-router", "service-splitter", "service-resolver", "service-defaults", "proxy-defaults")
MAX_CHAINS_CHECKED = 2000


def _chain_module() -> Any:
    try:
        return importlib.import_module("meshlib.discovery.consul.chain")
    except ImportError:
        return None


def _by_kind(store: CatalogStore, entry: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    entries = {(k, n): e for (k, n), e in store.config_entries.items() if k in CHAIN_KINDS}
    if entry is not None and entry["Kind"] in CHAIN_KINDS:
        entries[(entry["Kind"], entry["Name"])] = entry
    grouped: dict[str, list[dict[str, Any]]] = {kind: [] for kind in CHAIN_KINDS}
    for (kind, _), value in sorted(entries.items()):
        grouped[kind].append(value)
    return grouped


def _compile_problem(module: Any, service: str, entries: Mapping[str, Sequence[Mapping[str, Any]]],
                     datacenter: str) -> str | None:
    try:
        module.discovery_chain_response(service, entries, datacenter=datacenter)
    except module.ChainError as exc:
        return str(exc.message)
    except ValueError as exc:
        return str(exc)
    return None


def write_time_problem(store: CatalogStore, entry: dict[str, Any]) -> str | None:
    """Why Consul would refuse ``entry`` after compiling the chains it affects, or None."""
    module = _chain_module()
    if module is None or entry["Kind"] not in CHAIN_KINDS:
        return None
    before, after = _by_kind(store, None), _by_kind(store, entry)
    names = sorted({e["Name"] for kind in ("service-router", "service-splitter", "service-resolver",
                                           "service-defaults") for e in after[kind]})
    own = entry["Name"] if entry["Kind"] != "proxy-defaults" else ""
    for service in ([own] if own else []) + [n for n in names if n != own][:MAX_CHAINS_CHECKED]:
        problem = _compile_problem(module, service, after, store.datacenter)
        if problem is None:
            continue
        if service == own or _compile_problem(module, service, before, store.datacenter) is None:
            return problem
    return None


def render(store: CatalogStore, service: str, compile_dc: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"Chain": …}`` as ``/v1/discovery-chain/:service`` answers."""
    module = _chain_module()
    if module is None:
        raise HttpProblem(501, "discovery-chain is not available: meshlib's chain compiler is not installed")
    try:
        chain: dict[str, Any] = module.discovery_chain_response(
            service, _by_kind(store, None), datacenter=compile_dc, overrides=overrides)
    except module.ChainError as exc:
        raise HttpProblem(500, str(exc.message)) from None
    except ValueError as exc:
        raise HttpProblem(400, f"Request decoding failed: {exc}") from None
    return chain
