"""JSON shapes of Consul's HTTP API, built from the emulator's records.

The field names and nesting follow Consul's Go structs as the HTTP API
serialises them (``agent/structs`` on the server side, ``api/*.go`` on the
client side) and the samples in ``website/content/api-docs``:

- ``/v1/health/service/:svc`` → ``[{"Node": Node, "Service": NodeService, "Checks": [HealthCheck]}]``
- ``/v1/catalog/service/:svc`` → ``[ServiceNode]`` (flattened ``Service*``/``Node*`` fields)
- ``/v1/catalog/nodes`` → ``[Node]``; ``/v1/agent/services`` → ``{id: AgentService}``
- ``/v1/agent/checks`` → ``{id: AgentCheck}``

Durations inside check definitions are Go duration strings (``"10s"``).
Optional fields Consul omits when empty (``Locality``, ``Kind``,
``SocketPath``) are omitted here too.
"""

from __future__ import annotations

from typing import Any

from meshlib.testing.consul.state import CheckRecord, NodeRecord, ServiceRecord

# ``structs.HealthCheckDefinition``: every field is ``omitempty`` (a serf check's Definition is ``{}``).
_DEFINITION_FIELDS = ("HTTP", "TLSServerName", "TLSSkipVerify", "Header", "Method", "Body", "DisableRedirects",
                      "TCP", "TCPUseTLS", "UDP", "H2PING", "OSService", "H2PingUseTLS", "Interval", "OutputMaxSize",
                      "Timeout", "DeregisterCriticalServiceAfter", "ScriptArgs", "DockerContainerID", "Shell", "GRPC",
                      "GRPCUseTLS", "AliasNode", "AliasService", "TTL")
_EMPTY: tuple[Any, ...] = ("", None, False, 0, "0s", [], {})


def node_json(node: NodeRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ID": node.node_id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": dict(node.tagged_addresses),
        "Meta": dict(node.meta),
    }
    if node.locality:
        out["Locality"] = dict(node.locality)
    out["CreateIndex"] = node.create_index
    out["ModifyIndex"] = node.modify_index
    return out


def _proxy_defaults() -> dict[str, Any]:
    return {"Mode": "", "MeshGateway": {}, "Expose": {}}


def node_service_json(service: ServiceRecord) -> dict[str, Any]:
    """``structs.NodeService`` as ``/v1/health/service`` serialises it."""
    out: dict[str, Any] = {}
    if service.kind:
        out["Kind"] = service.kind
    out.update({
        "ID": service.service_id,
        "Service": service.name,
        "Tags": list(service.tags),
        "Address": service.address,
    })
    if service.tagged_addresses:
        out["TaggedAddresses"] = {k: dict(v) for k, v in service.tagged_addresses.items()}
    out.update({
        "Meta": dict(service.meta),
        "Port": service.port,
        "Weights": dict(service.weights),
        "EnableTagOverride": service.enable_tag_override,
    })
    if service.socket_path:
        out["SocketPath"] = service.socket_path
    if service.locality:
        out["Locality"] = dict(service.locality)
    out.update({
        "Proxy": _proxy_defaults(),
        "Connect": {},
        "CreateIndex": service.create_index,
        "ModifyIndex": service.modify_index,
    })
    return out


def check_json(check: CheckRecord) -> dict[str, Any]:
    """``structs.HealthCheck`` (``/v1/health/*`` and the ``Checks`` of a catalog answer)."""
    definition = {k: check.definition[k] for k in _DEFINITION_FIELDS
                  if k in check.definition and check.definition[k] not in _EMPTY}
    return {
        "Node": check.node,
        "CheckID": check.check_id,
        "Name": check.name,
        "Status": check.status,
        "Notes": check.notes,
        "Output": check.output,
        "ServiceID": check.service_id,
        "ServiceName": check.service_name,
        "ServiceTags": list(check.service_tags),
        "Type": check.type,
        "Interval": check.definition.get("Interval", "") if check.type in ("http", "tcp", "grpc") else "",
        "Timeout": check.definition.get("Timeout", "") if check.type in ("http", "tcp", "grpc") else "",
        "ExposedPort": 0,
        "Definition": definition,
        "CreateIndex": check.create_index,
        "ModifyIndex": check.modify_index,
    }


def health_entry_json(node: NodeRecord, service: ServiceRecord, checks: list[CheckRecord]) -> dict[str, Any]:
    return {"Node": node_json(node), "Service": node_service_json(service), "Checks": [check_json(c) for c in checks]}


def catalog_service_json(node: NodeRecord, service: ServiceRecord) -> dict[str, Any]:
    """``structs.ServiceNode`` — one element of ``/v1/catalog/service/:svc``."""
    out: dict[str, Any] = {
        "ID": node.node_id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": dict(node.tagged_addresses),
        "NodeMeta": dict(node.meta),
        "ServiceKind": service.kind,
        "ServiceID": service.service_id,
        "ServiceName": service.name,
        "ServiceTags": list(service.tags),
        "ServiceAddress": service.address,
        "ServiceWeights": dict(service.weights),
        "ServiceMeta": dict(service.meta),
        "ServicePort": service.port,
        "ServiceSocketPath": service.socket_path,
        "ServiceEnableTagOverride": service.enable_tag_override,
        "ServiceProxy": _proxy_defaults(),
        "ServiceConnect": {},
    }
    if service.tagged_addresses:
        out["ServiceTaggedAddresses"] = {k: dict(v) for k, v in service.tagged_addresses.items()}
    if service.locality:
        out["ServiceLocality"] = dict(service.locality)
    out["CreateIndex"] = service.create_index
    out["ModifyIndex"] = service.modify_index
    return out


def agent_service_json(service: ServiceRecord, datacenter: str) -> dict[str, Any]:
    """``api.AgentService`` — one value of ``/v1/agent/services``."""
    out: dict[str, Any] = {}
    if service.kind:
        out["Kind"] = service.kind
    out.update({
        "ID": service.service_id,
        "Service": service.name,
        "Tags": list(service.tags),
        "Meta": dict(service.meta),
        "Port": service.port,
        "Address": service.address,
    })
    if service.socket_path:
        out["SocketPath"] = service.socket_path
    if service.tagged_addresses:
        out["TaggedAddresses"] = {k: dict(v) for k, v in service.tagged_addresses.items()}
    out.update({
        "Weights": dict(service.weights),
        "EnableTagOverride": service.enable_tag_override,
        "Datacenter": datacenter,
    })
    if service.locality:
        out["Locality"] = dict(service.locality)
    return out


def agent_check_json(check: CheckRecord) -> dict[str, Any]:
    """``api.AgentCheck`` — one value of ``/v1/agent/checks``."""
    full = check_json(check)
    return {k: full[k] for k in ("Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceID",
                                 "ServiceName", "ServiceTags", "Type", "Interval", "Timeout", "ExposedPort",
                                 "Definition", "CreateIndex", "ModifyIndex")}


def aggregated_status(checks: list[CheckRecord]) -> str:
    """``api.HealthChecks.AggregatedStatus``: maintenance, then critical > warning > passing."""
    statuses = set()
    for check in checks:
        if check.check_id == "_node_maintenance" or check.check_id.startswith("_service_maintenance:"):
            return "maintenance"
        statuses.add(check.status)
    for status in ("critical", "warning"):
        if status in statuses:
            return status
    return "passing"
