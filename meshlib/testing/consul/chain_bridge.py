"""The emulator's use of meshlib's discovery-chain compiler (imported lazily).

Consul compiles the discovery chains a config-entry write affects and rejects
the write when one of them no longer compiles (a splitter on a ``tcp``
service: "does not permit advanced routing or splitting behavior", an unknown
subset, a redirect loop, mixed protocols), and ``/v1/discovery-chain/:svc``
returns the compiled chain. Both come from meshlib's own compiler
(``meshlib.discovery.consul.chain``); without it the write-time check is
skipped and the endpoint answers 501.

Only the chains a write can affect are compiled (its own service's, and those
that reach it through a route, split, redirect or failover, transitively; every
chain for ``proxy-defaults``), and only a chain that compiled before the write
and fails after it (or the written entry's own chain) blocks the write, so an
unrelated broken chain does not make every write fail.
"""

from __future__ import annotations

import importlib
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
    for (kind, _), value in entries.items():
        grouped[kind].append(value)
    return grouped


_REFS: dict[int, tuple[dict[str, Any], frozenset[str]]] = {}


def _refs_of(item: dict[str, Any]) -> frozenset[str]:
    """``_referenced_services`` of a stored entry, memoised (stored entries are never mutated)."""
    cached = _REFS.get(id(item))
    if cached is not None and cached[0] is item:
        return cached[1]
    found = frozenset(_referenced_services(item, set()))
    if len(_REFS) > 100_000:
        _REFS.clear()
    _REFS[id(item)] = (item, found)
    return found


def _compile_problem(module: Any, service: str, entries: dict[str, list[dict[str, Any]]],
                     datacenter: str) -> str | None:
    try:
        module.discovery_chain_response(service, _entries_reaching(service, entries), datacenter=datacenter)
    except module.ChainError as exc:
        return str(exc.message)
    except ValueError as exc:
        return str(exc)
    return None


def _referenced_services(value: Any, found: set[str]) -> set[str]:
    """Every ``Service`` named anywhere inside an entry (route destinations, splits, redirects, failover)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Service" and isinstance(item, str) and item:
                found.add(item)
            else:
                _referenced_services(item, found)
    elif isinstance(value, list):
        for item in value:
            _referenced_services(item, found)
    return found


def _affected_chains(after: dict[str, list[dict[str, Any]]], entry: dict[str, Any]) -> list[str]:
    """The chains a write can change: its own service's, and every chain that reaches it (transitively)."""
    names = sorted({e["Name"] for kind in CHAIN_KINDS[:4] for e in after[kind]})
    if entry["Kind"] == "proxy-defaults":
        return names[:MAX_CHAINS_CHECKED]  # the fallback protocol of every chain
    references: dict[str, set[str]] = {}
    for kind in ("service-router", "service-splitter", "service-resolver"):
        for item in after[kind]:
            references.setdefault(item["Name"], set()).update(_refs_of(item))
    affected = {entry["Name"]}
    grew = True
    while grew and len(affected) < MAX_CHAINS_CHECKED:
        grew = False
        for service, targets in references.items():
            if service not in affected and targets & affected:
                affected.add(service)
                grew = True
    return [entry["Name"], *sorted(affected - {entry["Name"]})]


def _entries_reaching(service: str, entries: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Only the entries ``service``'s chain can read: its services' closure, plus proxy-defaults.

    Keeps a write's compile cost proportional to the chain, not to every entry in the datacenter.
    """
    by_name: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for kind in CHAIN_KINDS[:4]:
        for item in entries[kind]:
            by_name.setdefault(item["Name"], []).append((kind, item))
    reached, frontier = {service}, [service]
    while frontier and len(reached) < MAX_CHAINS_CHECKED:
        name = frontier.pop()
        for _, item in by_name.get(name, ()):
            for target in _refs_of(item) - reached:
                reached.add(target)
                frontier.append(target)
    subset: dict[str, list[dict[str, Any]]] = {kind: [] for kind in CHAIN_KINDS}
    subset["proxy-defaults"] = list(entries["proxy-defaults"])
    for name in sorted(reached):
        for kind, item in by_name.get(name, ()):
            subset[kind].append(item)
    return subset


def write_time_problem(store: CatalogStore, entry: dict[str, Any]) -> str | None:
    """Why Consul would refuse ``entry`` after compiling the chains it affects, or None."""
    module = _chain_module()
    if module is None or entry["Kind"] not in CHAIN_KINDS:
        return None
    before, after = _by_kind(store, None), _by_kind(store, entry)
    own = entry["Name"] if entry["Kind"] != "proxy-defaults" else ""
    for service in _affected_chains(after, entry):
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
            service, _entries_reaching(service, _by_kind(store, None)), datacenter=compile_dc, overrides=overrides)
    except module.ChainError as exc:
        raise HttpProblem(500, str(exc.message)) from None
    except ValueError as exc:
        raise HttpProblem(400, f"Request decoding failed: {exc}") from None
    return chain
