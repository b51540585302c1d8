"""Test controls of :class:`~meshlib.testing.consul.ConsulEmulator` that shape its catalog.

A mixin so the emulator module stays about serving; every method here acts on
the emulator's stores directly (no HTTP), and a change wakes blocked queries
exactly as the same change made through the API would.
"""

from __future__ import annotations

from typing import Any

from meshlib.testing.consul.acl import AclPolicy, AclToken
from meshlib.testing.consul.agent import LocalAgent
from meshlib.testing.consul.checks import CheckRunner, Clock, ManualClock
from meshlib.testing.consul.config_entries import ConfigEntryError, decode_entry, validate_entry
from meshlib.testing.consul.state import STATUS_ORDER, CatalogStore, CheckRecord, ServiceRecord


class CatalogControls:
    """Catalog, config-entry, ACL, index and clock controls."""

    local_dc: str
    stores: dict[str, CatalogStore]
    clock: Clock
    acl: AclPolicy
    agent: LocalAgent
    runner: CheckRunner

    def chain_problem(self, store: CatalogStore, entry: dict[str, Any]) -> str | None:
        raise NotImplementedError

    # -- catalog --------------------------------------------------------------------------

    def add_service(
        self,
        name: str,
        port: int,
        *,
        address: str = "127.0.0.1",
        service_id: str | None = None,
        node: str | None = None,
        node_address: str | None = None,
        datacenter: str | None = None,
        tags: list[str] | tuple[str, ...] = (),
        meta: dict[str, str] | None = None,
        weights: dict[str, int] | None = None,
        status: str = "passing",
        node_locality: dict[str, str] | None = None,
        locality: dict[str, str] | None = None,
    ) -> str:
        """Put an instance in the catalog (like ``PUT /v1/catalog/register``) with one check.

        The check is ``service:<id>`` with ``status``; flip it with :meth:`set_check_status`.
        ``node`` defaults to one node per instance (``node-<id>``) at ``node_address``
        (default: ``address``); an existing node keeps its address and locality unless
        ``node_address`` / ``node_locality`` are given. Returns the service ID.
        """
        if status not in STATUS_ORDER:
            raise ValueError(f"status must be one of {sorted(STATUS_ORDER)}")
        store = self.store_for(datacenter)
        sid = service_id or f"{name}-{address}-{port}"
        node_name = node or f"node-{sid}"
        existing = store.nodes.get(node_name)
        if existing is None or node_address is not None or node_locality is not None:
            store.ensure_node(node_name, node_address or (existing.address if existing else address),
                              locality=node_locality if node_locality is not None else
                              (existing.locality if existing else None))
        store.set_service(ServiceRecord(
            node=node_name, service_id=sid, name=name, port=port, address=address, tags=list(tags),
            meta=dict(meta or {}), weights=dict(weights or {"Passing": 1, "Warning": 1}), locality=locality,
        ))
        store.set_check(CheckRecord(node=node_name, check_id=f"service:{sid}", name=f"Service '{name}' check",
                                    status=status, service_id=sid, type="ttl"))
        return sid

    def remove_service(self, service_id: str, *, datacenter: str | None = None) -> None:
        store = self.store_for(datacenter)
        for node, sid in list(store.services):
            if sid == service_id:
                store.delete_service(node, sid)

    def set_check_status(self, id_: str, status: str, *, output: str = "", datacenter: str | None = None) -> int:
        """Set a check (by CheckID) or every check of a service instance (by ServiceID); returns how many."""
        if status not in STATUS_ORDER:
            raise ValueError(f"status must be one of {sorted(STATUS_ORDER)}")
        store = self.store_for(datacenter)
        changed = 0
        for (node, check_id), check in list(store.checks.items()):
            if id_ in (check_id, check.service_id):
                store.set_check_status(node, check_id, status, output)
                self.runner.note_status(check_id, status)
                changed += 1
        return changed

    def set_node_status(self, node: str, status: str, *, datacenter: str | None = None) -> None:
        """Set a node's ``serfHealth`` (affects every instance on it)."""
        if not self.store_for(datacenter).set_check_status(node, "serfHealth", status):
            raise KeyError(node)

    def set_node_locality(self, node: str, region: str, zone: str = "", *, datacenter: str | None = None) -> None:
        store = self.store_for(datacenter)
        record = store.nodes[node]
        locality = {"Region": region, "Zone": zone} if zone else {"Region": region}
        store.ensure_node(node, record.address, meta=record.meta, tagged_addresses=record.tagged_addresses,
                          locality=locality)

    def set_config_entry(self, entry: dict[str, Any], *, datacenter: str | None = None) -> None:
        """Write a config entry through the same decoding and validation as ``PUT /v1/config``."""
        store = self.store_for(datacenter)
        try:
            decoded = decode_entry(entry)
        except ConfigEntryError as exc:
            raise ValueError(str(exc)) from None
        problem = validate_entry(decoded) or self.chain_problem(store, decoded)
        if problem is not None:
            raise ValueError(f"{decoded['Kind']} {decoded['Name']!r}: {problem}")
        store.set_config_entry(decoded)

    def delete_config_entry(self, kind: str, name: str, *, datacenter: str | None = None) -> None:
        self.store_for(datacenter).delete_config_entry(kind, name)

    def store_for(self, datacenter: str | None) -> CatalogStore:
        dc = datacenter or self.local_dc
        if dc not in self.stores:
            self.stores[dc] = CatalogStore(dc)
        return self.stores[dc]

    def enable_acls(self, tokens: list[AclToken], *, default_policy: str = "deny") -> None:
        self.acl.enable(tokens, default_policy)

    def restore_snapshot(self, index: int = 1, *, datacenter: str | None = None) -> None:
        """Move the datacenter's indexes back to ``index`` (snapshot restore); blocked queries return."""
        self.store_for(datacenter).restore_snapshot(index)

    async def advance(self, seconds: float) -> None:
        """Move a :class:`ManualClock` forward and run TTL expiry and the reaper at once."""
        if not isinstance(self.clock, ManualClock):
            raise TypeError("advance() needs ConsulEmulator(clock=ManualClock())")
        self.clock.advance(seconds)
        self.runner.sweep()
        self.runner.reap()

