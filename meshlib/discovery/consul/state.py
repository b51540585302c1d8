"""The raw Consul state one mesh snapshot is compiled from."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


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
            "services": {name: list(entries) for name, entries in self.services.items()},
            "config_entries": {kind: list(entries) for kind, entries in self.config_entries.items()},
        }
        if self.remote_services:  # left out when empty: versions stay as they were without it
            document["remote_services"] = {
                dc: {name: list(entries) for name, entries in services.items()}
                for dc, services in self.remote_services.items()
            }
        return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()

    def version(self) -> str:
        """A deterministic version: every replica reading the same Consul state computes the same one.

        Raft indexes (``CreateIndex``/``ModifyIndex``) are part of the hash, so a
        write that changes nothing else still gives a new version.
        """
        return "consul-" + hashlib.sha256(self.canonical_json()).hexdigest()[:16]
