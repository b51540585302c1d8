"""The raw Consul state one mesh snapshot is compiled from."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshlib.discovery.consul.memo import IdentityCache


@dataclass(frozen=True)
class ConsulState:
    """Everything meshlib read from Consul, as Consul returned it.

    ``services`` maps a service name to its raw ``/v1/health/service/NAME``
    entries (each ``{"Node": …, "Service": …, "Checks": […]}``);
    ``config_entries`` maps a config-entry kind (``service-router``…) to the
    raw ``/v1/config/KIND`` list. ``remote_services`` (optional) holds other
    datacenters' health entries, ``{dc: {name: entries}}`` (``?dc=DC``), for
    resolver ``Failover``/``Redirect`` across datacenters; a datacenter missing
    there is a failover target without instances.

    >>> a = ConsulState("dc1", {"web": []}, {})
    >>> a.version() == ConsulState("dc1", {"web": []}, {}).version()
    True
    """

    datacenter: str
    services: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    config_entries: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    remote_services: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]] = field(default_factory=dict)

    def canonical_json(self) -> bytes:
        """The state as canonical JSON (sorted keys, no whitespace): equal states give equal bytes."""
        document: dict[str, Any] = {
            "datacenter": self.datacenter,
            "services": {name: _as_json(entries) for name, entries in self.services.items()},
            "config_entries": {kind: _as_json(entries) for kind, entries in self.config_entries.items()},
        }
        if self.remote_services:  # left out when empty: versions stay as they were without it
            document["remote_services"] = {
                dc: {name: _as_json(entries) for name, entries in services.items()}
                for dc, services in self.remote_services.items()
                if isinstance(services, Mapping)
            }
        return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()

    def version(self) -> str:
        """A deterministic version: every replica reading the same Consul state computes the same one.

        A SHA-256 over the datacenter and the canonical JSON digest of each
        service's entries and each kind's config entries, in name order (the
        digests of unchanged lists are reused between calls). Raft indexes
        (``CreateIndex``/``ModifyIndex``) are part of the hash, so a write that
        changes nothing else still gives a new version.
        """
        outer = hashlib.sha256(b"consul-state-v1\0" + self.datacenter.encode())
        parts: list[tuple[str, str, Sequence[Any]]] = [("s", n, e) for n, e in self.services.items()]
        parts += [("c", k, e) for k, e in self.config_entries.items()]
        parts += [(f"r:{dc}", n, e) for dc, svcs in self.remote_services.items() if isinstance(svcs, Mapping)
                  for n, e in svcs.items()]
        for group, name, entries in sorted(parts, key=lambda p: (p[0], p[1])):
            outer.update(f"\0{group}\0{name}\0".encode())
            outer.update(_digest((group, name), entries).encode())
        return "consul-" + outer.hexdigest()[:16]


_DIGESTS: IdentityCache[str] = IdentityCache()


def _as_json(entries: Any) -> Any:
    """A list for JSON (tuples included); anything else as it is (hostile input still hashes)."""
    return list(entries) if isinstance(entries, list | tuple) else entries


def _digest(key: tuple[str, str], entries: Sequence[Any]) -> str:
    cached = _DIGESTS.get(key, entries)
    if cached is not None:
        return cached
    text = json.dumps(_as_json(entries), sort_keys=True, separators=(",", ":"), default=str)
    return _DIGESTS.put(key, entries, hashlib.sha256(text.encode()).hexdigest())
