"""Key-by-key comparison of a Consul answer (documented or recorded) with the emulator's."""

from __future__ import annotations

from typing import Any

ENTERPRISE_ONLY = frozenset({"Namespace", "Partition"})
# Maps of user-chosen keys, and blocks whose documented samples predate the current structs.
OPAQUE = frozenset({"Meta", "NodeMeta", "ServiceMeta", "TaggedAddresses", "ServiceTaggedAddresses", "ServiceProxy",
                    "ServiceConnect", "Proxy", "Connect", "Definition", "Subsets", "Nodes", "Targets", "Failover",
                    "Config"})
# Values that are identifiers or indexes differ between runs; only their JSON type is compared.


def shape_problems(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Where ``actual`` lacks a key ``expected`` has, or holds a value of another JSON type."""
    if expected is None:
        return []
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {type(actual).__name__}"]
        problems = []
        for key, value in expected.items():
            if key in ENTERPRISE_ONLY:
                continue
            if key not in actual:
                problems.append(f"{path}.{key}: missing")
            elif key in OPAQUE:
                if value is not None and actual[key] is not None and not isinstance(actual[key], dict):
                    problems.append(f"{path}.{key}: expected an object")
            else:
                problems.extend(shape_problems(value, actual[key], f"{path}.{key}"))
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path}: expected a list, got {type(actual).__name__}"]
        problems = []
        for index, item in enumerate(expected):
            if actual:
                problems.extend(shape_problems(item, actual[min(index, len(actual) - 1)], f"{path}[{index}]"))
        return problems
    if isinstance(expected, bool) or isinstance(actual, bool):
        return [] if isinstance(expected, bool) and isinstance(actual, bool) else [f"{path}: expected a bool"]
    if isinstance(expected, int | float):
        return [] if isinstance(actual, int | float) else [f"{path}: expected a number, got {actual!r}"]
    if isinstance(expected, str):
        return [] if isinstance(actual, str) else [f"{path}: expected a string, got {actual!r}"]
    return []
