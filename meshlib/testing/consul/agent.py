"""The local agent: registration, deregistration, maintenance and TTL updates.

What a client does through ``/v1/agent/*`` lands here and is written to the
local datacenter's catalog at once (a real agent syncs it to the servers with
anti-entropy within milliseconds; the emulator has no delay to simulate).
"""

from __future__ import annotations

import ipaddress

from meshlib.testing.consul.checks import CheckRunner
from meshlib.testing.consul.registration import Registration
from meshlib.testing.consul.state import (
    CRITICAL,
    NODE_MAINTENANCE_ID,
    SERVICE_MAINTENANCE_PREFIX,
    CatalogStore,
    CheckRecord,
    ServiceRecord,
)

DEFAULT_SERVICE_REASON = ("Maintenance mode is enabled for this service, but no reason was provided. "
                          "This is a default message.")
DEFAULT_NODE_REASON = ("Maintenance mode is enabled for this node, but no reason was provided. "
                       "This is a default message.")


class AgentError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class LocalAgent:
    """The agent the emulator's HTTP API speaks for: one node in the local datacenter."""

    def __init__(self, store: CatalogStore, runner: CheckRunner, *, node: str, address: str) -> None:
        self.store = store
        self.runner = runner
        self.node = node
        self.address = address
        self.locality: dict[str, str] | None = None

    def ensure_node(self) -> None:
        self.store.ensure_node(self.node, self.address, locality=self.locality)

    def services(self) -> list[ServiceRecord]:
        return self.store.services_on(self.node)

    def service(self, service_id: str) -> ServiceRecord | None:
        return self.store.services.get((self.node, service_id))

    def register(self, registration: Registration, *, replace_existing_checks: bool = False) -> ServiceRecord:
        self.ensure_node()
        service = registration.service
        service.node = self.node
        _default_tagged_addresses(service)
        if service.locality is None and self.locality:
            service.locality = dict(self.locality)  # Consul 1.17+: services inherit the agent's locality
        previous = {c.check_id: c for c in self.store.checks_for(self.node, service.service_id) if c.service_id}
        stored = self.store.set_service(service)
        wanted = set()
        for spec in registration.checks:
            wanted.add(spec.check_id)
            before = previous.get(spec.check_id)
            status = before.status if before is not None else spec.status
            record = CheckRecord(
                node=self.node, check_id=spec.check_id, name=spec.name, status=status, notes=spec.notes,
                output=before.output if before is not None else "", service_id=service.service_id,
                type=spec.type, definition=spec.definition,
            )
            self.store.set_check(record)
            self.runner.add(spec, self.node, status)
        if replace_existing_checks:
            for check_id in previous:
                if check_id not in wanted and not check_id.startswith(SERVICE_MAINTENANCE_PREFIX):
                    self.store.delete_check(self.node, check_id)
                    self.runner.remove(check_id)
        return stored

    def deregister(self, service_id: str) -> None:
        service = self.service(service_id)
        if service is None:
            raise AgentError(404, f'Unknown service ID "{service_id}". Ensure that the service ID is passed, '
                                  "not the service name.")
        for check in self.store.checks_for(self.node, service_id):
            if check.service_id == service_id:
                self.runner.remove(check.check_id)
        self.store.delete_service(self.node, service_id)

    def reap(self, service_id: str) -> None:
        """The critical-service reaper's deregistration (no error when already gone)."""
        if self.service(service_id) is not None:
            self.deregister(service_id)

    def service_maintenance(self, service_id: str, enable: bool, reason: str) -> None:
        service = self.service(service_id)
        if service is None:
            raise AgentError(404, f'Unknown service ID "{service_id}"')
        check_id = SERVICE_MAINTENANCE_PREFIX + service_id
        if enable:
            self.store.set_check(CheckRecord(
                node=self.node, check_id=check_id, name="Service Maintenance Mode", status=CRITICAL,
                notes=reason or DEFAULT_SERVICE_REASON, service_id=service_id, type="maintenance",
            ))
        else:
            self.store.delete_check(self.node, check_id)

    def node_maintenance(self, enable: bool, reason: str) -> None:
        self.ensure_node()
        if enable:
            self.store.set_check(CheckRecord(
                node=self.node, check_id=NODE_MAINTENANCE_ID, name="Node Maintenance Mode", status=CRITICAL,
                notes=reason or DEFAULT_NODE_REASON, type="maintenance",
            ))
        else:
            self.store.delete_check(self.node, NODE_MAINTENANCE_ID)

    def update_ttl(self, check_id: str, status: str, output: str) -> None:
        if not self.runner.ttl_update(check_id, status, output):
            raise AgentError(404, f'CheckID "{check_id}" does not have associated TTL')

    def check(self, check_id: str) -> CheckRecord | None:
        return self.store.checks.get((self.node, check_id))


def _default_tagged_addresses(service: ServiceRecord) -> None:
    """The agent adds ``lan_ipv4``/``wan_ipv4`` (or ``_ipv6``) for a service registered with an IP address."""
    try:
        ip = ipaddress.ip_address(service.address)
    except ValueError:
        return
    family = "ipv4" if ip.version == 4 else "ipv6"
    for kind in ("lan", "wan"):
        service.tagged_addresses.setdefault(f"{kind}_{family}", {"Address": service.address, "Port": service.port})
