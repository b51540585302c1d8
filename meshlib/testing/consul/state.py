"""The emulator's in-memory catalog: one store per datacenter, Consul's index rules.

Every write is a transaction that takes the next value of the datacenter's
raft-like index and stamps it on what it changed (``CreateIndex`` /
``ModifyIndex``) and on the index *tables* Consul's blocking queries report:

- ``nodes`` / ``services`` — ``/v1/catalog/nodes`` and ``/v1/catalog/services``
  (a health flip does not move ``services``, as in Consul);
- ``service.<name>`` — ``/v1/health/service/<name>`` and
  ``/v1/catalog/service/<name>``: registration, deregistration, a check of an
  instance, or a check/change of a node hosting one;
- ``service_extinction`` — what a query for a name with no instances reports
  (Consul's ``maxIndexForService``);
- ``config-entries`` — every config-entry read reports this table-wide index,
  while only writes to the same kind wake a blocked reader (Consul watches the
  kind, returns the table's max index).

Writes that change nothing do not take an index (Consul's state store skips
identical service/check writes, so a TTL heartbeat with the same status does
not wake watchers). :meth:`CatalogStore.restore_snapshot` moves the index
backwards and wakes every blocked query at once, like a snapshot restore that
abandons the state store.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
STATUS_ORDER = {PASSING: 0, WARNING: 1, CRITICAL: 2}
SERF_CHECK_ID = "serfHealth"
NODE_MAINTENANCE_ID = "_node_maintenance"
SERVICE_MAINTENANCE_PREFIX = "_service_maintenance:"


@dataclass
class NodeRecord:
    name: str
    node_id: str
    address: str
    datacenter: str
    meta: dict[str, str] = field(default_factory=dict)
    tagged_addresses: dict[str, str] = field(default_factory=dict)
    locality: dict[str, str] | None = None
    create_index: int = 0
    modify_index: int = 0


@dataclass
class ServiceRecord:
    node: str
    service_id: str
    name: str
    port: int = 0
    address: str = ""
    tags: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    tagged_addresses: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=lambda: {"Passing": 1, "Warning": 1})
    enable_tag_override: bool = False
    kind: str = ""
    locality: dict[str, str] | None = None
    socket_path: str = ""
    create_index: int = 0
    modify_index: int = 0

    def same_as(self, other: ServiceRecord) -> bool:
        mine = {k: v for k, v in vars(self).items() if k not in ("create_index", "modify_index")}
        theirs = {k: v for k, v in vars(other).items() if k not in ("create_index", "modify_index")}
        return mine == theirs


@dataclass
class CheckRecord:
    node: str
    check_id: str
    name: str
    status: str = CRITICAL
    notes: str = ""
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: list[str] = field(default_factory=list)
    type: str = ""
    definition: dict[str, Any] = field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0


class StoreTxn:
    """One write: takes at most one index, remembers which tables it moved."""

    def __init__(self, store: CatalogStore) -> None:
        self._store = store
        self.touched: set[str] = set()
        self._index = 0

    @property
    def index(self) -> int:
        if not self._index:
            self._store.index += 1
            self._index = self._store.index
        return self._index

    def touch(self, *tables: str) -> None:
        self.touched.update(tables)


class CatalogStore:
    """The state of one datacenter (catalog + config entries) and its blocked readers."""

    def __init__(self, datacenter: str) -> None:
        self.datacenter = datacenter
        self.index = 0
        self.tables: dict[str, int] = {}
        self.nodes: dict[str, NodeRecord] = {}
        self.services: dict[tuple[str, str], ServiceRecord] = {}
        self.checks: dict[tuple[str, str], CheckRecord] = {}
        self.config_entries: dict[tuple[str, str], dict[str, Any]] = {}
        # Secondary indexes, so a health query costs O(instances of that name), not O(catalog).
        self._by_name: dict[str, dict[tuple[str, str], ServiceRecord]] = {}
        self._node_services: dict[str, dict[str, ServiceRecord]] = {}
        self._node_checks: dict[str, dict[str, CheckRecord]] = {}
        self._instance_checks: dict[tuple[str, str], dict[str, CheckRecord]] = {}  # ServiceID "" = node-level
        self.generation = 0  # bumped by a snapshot restore: every blocked query returns
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}

    # -- transactions and blocking ---------------------------------------------------------------

    @contextmanager
    def txn(self) -> Iterator[StoreTxn]:
        tx = StoreTxn(self)
        yield tx
        if not tx.touched:
            return
        index = tx.index
        for table in tx.touched:
            self.tables[table] = index
        self._wake(tx.touched)

    def _wake(self, topics: set[str] | None) -> None:
        keys = list(self._waiters) if topics is None else [t for t in topics if t in self._waiters]
        for key in keys:
            for future in self._waiters.pop(key, ()):
                if not future.done():
                    future.set_result(None)

    async def wait_for_change(self, topics: list[str], within: float) -> None:
        """Return when a write touches one of ``topics``, on a restore, or after ``within`` seconds."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for topic in topics:
            self._waiters.setdefault(topic, set()).add(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), within)
        except TimeoutError:
            pass
        finally:
            for topic in topics:
                waiters = self._waiters.get(topic)
                if waiters is not None:
                    waiters.discard(future)
                    if not waiters:
                        del self._waiters[topic]

    def wake_all(self) -> None:
        """Release every blocked query (outage or shutdown)."""
        self._wake(None)

    def table_index(self, *tables: str) -> int:
        return max((self.tables.get(t, 0) for t in tables), default=0)

    def service_index(self, name: str) -> int:
        """Consul's ``maxIndexForService``: per-name index, or the extinction index when none exist."""
        if self._by_name.get(name):
            return self.tables.get(f"service.{name}", 0)
        extinction = self.tables.get("service_extinction", 0)
        return extinction or self.table_index("nodes", "services")

    def restore_snapshot(self, index: int) -> None:
        """Move every index back to at most ``index`` and release all blocked queries."""
        index = max(1, index)
        self.index = index
        self.tables = {k: min(v, index) for k, v in self.tables.items()}
        records: list[NodeRecord | ServiceRecord | CheckRecord] = [
            *self.nodes.values(), *self.services.values(), *self.checks.values()]
        for record in records:
            record.create_index = min(record.create_index, index)
            record.modify_index = min(record.modify_index, index)
        for entry in self.config_entries.values():
            entry["CreateIndex"] = min(int(entry["CreateIndex"]), index)
            entry["ModifyIndex"] = min(int(entry["ModifyIndex"]), index)
        self.generation += 1
        self._wake(None)

    # -- catalog writes ------------------------------------------------------------------------------

    def services_on(self, node: str) -> list[ServiceRecord]:
        return list(self._node_services.get(node, {}).values())

    def instances(self, name: str) -> list[ServiceRecord]:
        """Every instance of service ``name``, ordered by node then service ID."""
        found = self._by_name.get(name) or {}
        return [found[key] for key in sorted(found)]

    def _index_service(self, record: ServiceRecord) -> None:
        key = (record.node, record.service_id)
        self.services[key] = record
        self._by_name.setdefault(record.name, {})[key] = record
        self._node_services.setdefault(record.node, {})[record.service_id] = record

    def _unindex_service(self, record: ServiceRecord) -> None:
        key = (record.node, record.service_id)
        self.services.pop(key, None)
        named = self._by_name.get(record.name)
        if named is not None:
            named.pop(key, None)
            if not named:
                del self._by_name[record.name]
        on_node = self._node_services.get(record.node)
        if on_node is not None:
            on_node.pop(record.service_id, None)

    def _index_check(self, check: CheckRecord) -> None:
        previous = self.checks.get((check.node, check.check_id))
        if previous is not None and previous.service_id != check.service_id:
            self._unindex_check(check.node, check.check_id)
        self.checks[(check.node, check.check_id)] = check
        self._node_checks.setdefault(check.node, {})[check.check_id] = check
        self._instance_checks.setdefault((check.node, check.service_id), {})[check.check_id] = check

    def _unindex_check(self, node: str, check_id: str) -> CheckRecord | None:
        check = self.checks.pop((node, check_id), None)
        on_node = self._node_checks.get(node)
        if on_node is not None:
            on_node.pop(check_id, None)
        if check is not None:
            of_instance = self._instance_checks.get((node, check.service_id))
            if of_instance is not None:
                of_instance.pop(check_id, None)
                if not of_instance:
                    del self._instance_checks[(node, check.service_id)]
        return check

    def _touch_node_services(self, tx: StoreTxn, node: str) -> None:
        tx.touch(*{f"service.{s.name}" for s in self.services_on(node)})

    def ensure_node(
        self,
        name: str,
        address: str,
        *,
        node_id: str | None = None,
        meta: dict[str, str] | None = None,
        tagged_addresses: dict[str, str] | None = None,
        locality: dict[str, str] | None = None,
    ) -> NodeRecord:
        """Create or update a node; a new node gets a passing ``serfHealth`` check."""
        existing = self.nodes.get(name)
        tagged = tagged_addresses if tagged_addresses is not None else {
            "lan": address, "lan_ipv4": address, "wan": address, "wan_ipv4": address,
        }
        node_meta = meta if meta is not None else {"consul-network-segment": ""}
        with self.txn() as tx:
            if existing is None:
                record = NodeRecord(
                    name=name, node_id=node_id or str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{self.datacenter}.{name}")),
                    address=address, datacenter=self.datacenter, meta=node_meta, tagged_addresses=tagged,
                    locality=locality, create_index=tx.index, modify_index=tx.index,
                )
                self.nodes[name] = record
                tx.touch("nodes")
                self.set_check(CheckRecord(
                    node=name, check_id=SERF_CHECK_ID, name="Serf Health Status", status=PASSING,
                    output="Agent alive and reachable",
                ), tx=tx)
                return record
            changed = (existing.address, existing.meta, existing.tagged_addresses, existing.locality) != (
                address, node_meta, tagged, locality)
            if changed:
                existing.address, existing.meta, existing.tagged_addresses = address, node_meta, tagged
                existing.locality = locality
                existing.modify_index = tx.index
                tx.touch("nodes")
                self._touch_node_services(tx, name)
            return existing

    def set_service(self, record: ServiceRecord) -> ServiceRecord:
        """Insert or replace a service instance; identical writes take no index."""
        key = (record.node, record.service_id)
        existing = self.services.get(key)
        if existing is not None and existing.same_as(record):
            return existing
        with self.txn() as tx:
            record.create_index = existing.create_index if existing else tx.index
            record.modify_index = tx.index
            if existing is not None:
                self._unindex_service(existing)
            self._index_service(record)
            tx.touch("services", f"service.{record.name}")
            if existing is not None and existing.name != record.name:
                tx.touch(f"service.{existing.name}")
                self._note_extinction(tx, existing.name)
        return record

    def delete_service(self, node: str, service_id: str) -> ServiceRecord | None:
        """Remove an instance and its checks."""
        record = self.services.get((node, service_id))
        if record is None:
            return None
        with self.txn() as tx:
            self._unindex_service(record)
            for check in list(self._node_checks.get(node, {}).values()):
                if check.service_id == service_id:
                    self._unindex_check(node, check.check_id)
            tx.touch("services", "checks", f"service.{record.name}")
            self._note_extinction(tx, record.name)
        return record

    def _note_extinction(self, tx: StoreTxn, name: str) -> None:
        if not self._by_name.get(name):
            tx.touch("service_extinction")

    def delete_node(self, name: str) -> bool:
        if name not in self.nodes:
            return False
        for record in self.services_on(name):
            self.delete_service(name, record.service_id)
        with self.txn() as tx:
            del self.nodes[name]
            for check_id in list(self._node_checks.get(name, {})):
                self._unindex_check(name, check_id)
            self._node_checks.pop(name, None)
            self._node_services.pop(name, None)
            tx.touch("nodes", "checks")
        return True

    def set_check(self, check: CheckRecord, *, tx: StoreTxn | None = None) -> CheckRecord:
        """Insert or update a check (status/notes/definition); identical writes take no index."""
        if tx is None:
            with self.txn() as own:
                return self.set_check(check, tx=own)
        key = (check.node, check.check_id)
        existing = self.checks.get(key)
        if check.service_id:
            service = self.services.get((check.node, check.service_id))
            if service is not None:
                check.service_name, check.service_tags = service.name, list(service.tags)
        if existing is not None:
            same = (existing.status, existing.name, existing.notes, existing.definition, existing.service_id,
                    existing.type) == (check.status, check.name, check.notes, check.definition, check.service_id,
                                       check.type)
            if same:
                existing.output = check.output  # output-only changes are synced lazily by agents
                return existing
            check.create_index = existing.create_index
        else:
            check.create_index = tx.index
        check.modify_index = tx.index
        self._index_check(check)
        tx.touch("checks")
        if check.service_id:
            tx.touch(f"service.{check.service_name}")
        else:
            self._touch_node_services(tx, check.node)
        return check

    def set_check_status(self, node: str, check_id: str, status: str, output: str | None = None) -> bool:
        check = self.checks.get((node, check_id))
        if check is None:
            return False
        updated = CheckRecord(**{**vars(check), "status": status,
                                 "output": check.output if output is None else output})
        self.set_check(updated)
        return True

    def delete_check(self, node: str, check_id: str) -> bool:
        check = self._unindex_check(node, check_id)
        if check is None:
            return False
        with self.txn() as tx:
            tx.touch("checks")
            if check.service_id:
                tx.touch(f"service.{check.service_name}")
            else:
                self._touch_node_services(tx, node)
        return True

    def checks_for(self, node: str, service_id: str) -> list[CheckRecord]:
        """Node-level checks plus the instance's own, in Consul's order (node first)."""
        node_level = self._instance_checks.get((node, "")) or {}
        own = self._instance_checks.get((node, service_id)) or {} if service_id else {}
        return [node_level[k] for k in sorted(node_level)] + [own[k] for k in sorted(own)]

    # -- config entries --------------------------------------------------------------------------------

    def set_config_entry(self, entry: dict[str, Any], cas: int | None = None) -> bool:
        kind, name = entry["Kind"], entry["Name"]
        existing = self.config_entries.get((kind, name))
        if cas is not None:
            current = int(existing["ModifyIndex"]) if existing else 0
            if current != cas:
                return False
        with self.txn() as tx:
            stored = dict(entry)
            stored["CreateIndex"] = existing["CreateIndex"] if existing else tx.index
            stored["ModifyIndex"] = tx.index
            self.config_entries[(kind, name)] = stored
            tx.touch("config-entries", f"config.{kind}")
        return True

    def delete_config_entry(self, kind: str, name: str, cas: int | None = None) -> bool:
        existing = self.config_entries.get((kind, name))
        if cas is not None and (existing is None or int(existing["ModifyIndex"]) != cas):
            return False
        with self.txn() as tx:
            # Consul's delete is a raft write even when the entry is absent.
            self.config_entries.pop((kind, name), None)
            tx.touch("config-entries", f"config.{kind}")
        return True
