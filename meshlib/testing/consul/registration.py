"""``PUT /v1/agent/service/register`` bodies: decoding and Consul's write-time checks.

Consul's wording is kept for every rejection (``agent/agent_endpoint.go``
``AgentRegisterService``, ``agent/structs`` ``CheckType.Validate``,
``ValidateWeights``, ``ValidateServiceMetadata``), so a client tested against
the emulator sees the messages a real agent would send.

>>> spec = decode_registration({"name": "web", "port": 8080, "check": {"ttl": "10s"}})
>>> spec.service.service_id, spec.checks[0].check_id, spec.checks[0].type
('web', 'service:web', 'ttl')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from meshlib.testing.consul.durations import format_go_duration, parse_go_duration
from meshlib.testing.consul.schema import (
    ANY,
    BOOL,
    DURATION,
    INT,
    STR,
    STRLIST,
    STRMAP,
    DecodeError,
    ListOf,
    MapOf,
    Obj,
    decode,
)
from meshlib.testing.consul.state import CRITICAL, STATUS_ORDER, ServiceRecord

CHECK_SCHEMA = Obj(
    {
        "CheckID": STR, "Name": STR, "Status": STR, "Notes": STR, "ScriptArgs": STRLIST, "HTTP": STR,
        "Header": MapOf(STRLIST), "Method": STR, "Body": STR, "DisableRedirects": BOOL, "TCP": STR,
        "TCPUseTLS": BOOL, "UDP": STR, "GRPC": STR, "GRPCUseTLS": BOOL, "H2PING": STR, "H2PingUseTLS": BOOL,
        "OSService": STR, "TLSServerName": STR, "TLSSkipVerify": BOOL, "Interval": DURATION, "Timeout": DURATION,
        "TTL": DURATION, "DeregisterCriticalServiceAfter": DURATION, "SuccessBeforePassing": INT,
        "FailuresBeforeWarning": INT, "FailuresBeforeCritical": INT, "OutputMaxSize": INT, "AliasNode": STR,
        "AliasService": STR, "DockerContainerID": STR, "Shell": STR, "ServiceID": STR,
    },
    aliases={"ID": "CheckID", "Args": "ScriptArgs"},
)
_ADDRESS = Obj({"Address": STR, "Port": INT})
SERVICE_SCHEMA = Obj(
    {
        "Kind": STR, "ID": STR, "Name": STR, "Tags": STRLIST, "Address": STR, "TaggedAddresses": MapOf(_ADDRESS),
        "Meta": STRMAP, "Port": INT, "SocketPath": STR, "Check": CHECK_SCHEMA, "Checks": ListOf(CHECK_SCHEMA),
        "Weights": Obj({"Passing": INT, "Warning": INT}), "Token": STR, "EnableTagOverride": BOOL, "Proxy": ANY,
        "Connect": ANY, "Locality": Obj({"Region": STR, "Zone": STR}), "Namespace": STR, "Partition": STR,
    },
)

_META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")
_ANY_ADDRESSES = {"0.0.0.0", "::", "[::]"}
DEFAULT_CHECK_TIMEOUT_NS = 10 * 1_000_000_000


class RegistrationError(ValueError):
    """A registration Consul refuses; ``status`` is the HTTP code it answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class CheckSpec:
    """One check of a registration, with defaults applied and durations in nanoseconds."""

    check_id: str
    name: str
    type: str
    status: str
    notes: str
    definition: dict[str, Any]
    service_id: str = ""
    interval_ns: int = 0
    timeout_ns: int = DEFAULT_CHECK_TIMEOUT_NS
    ttl_ns: int = 0
    deregister_after_ns: int = 0
    http: str = ""
    method: str = "GET"
    header: dict[str, list[str]] = field(default_factory=dict)
    body: str = ""
    tcp: str = ""
    success_before_passing: int = 0
    failures_before_critical: int = 0
    failures_before_warning: int = 0


@dataclass
class Registration:
    service: ServiceRecord
    checks: list[CheckSpec]


def _ns(definition: dict[str, Any], key: str) -> int:
    value = definition.get(key)
    return parse_go_duration(value) if value else 0


def check_type_of(definition: dict[str, Any]) -> str:
    for key, kind in (("ScriptArgs", "script"), ("HTTP", "http"), ("TCP", "tcp"), ("UDP", "udp"), ("GRPC", "grpc"),
                      ("H2PING", "h2ping"), ("OSService", "os_service"), ("AliasService", "alias"),
                      ("AliasNode", "alias")):
        if definition.get(key):
            return "docker" if kind == "script" and definition.get("DockerContainerID") else kind
    return "ttl"


def validate_check(definition: dict[str, Any]) -> str | None:
    """``CheckType.Validate()``'s message, or None."""
    interval, ttl = _ns(definition, "Interval"), _ns(definition, "TTL")
    kind = check_type_of(definition)
    interval_check = kind in ("script", "docker", "http", "tcp", "udp", "grpc", "h2ping", "os_service")
    alias = kind == "alias"
    if interval > 0 and ttl > 0:
        return "Interval and TTL cannot both be specified"
    if interval_check and interval <= 0:
        return "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"
    if interval_check and alias:
        return "Interval cannot be set for Alias checks"
    if alias and ttl > 0:
        return "TTL must be not be set for Alias checks"
    if not interval_check and not alias and ttl <= 0:
        return "TTL must be > 0 for TTL checks"
    if int(definition.get("OutputMaxSize") or 0) < 0:
        return "MaxOutputMaxSize must be positive"
    if int(definition.get("FailuresBeforeWarning") or 0) > int(definition.get("FailuresBeforeCritical") or 0):
        return "FailuresBeforeWarning can't be higher than FailuresBeforeCritical"
    return None


def validate_meta(meta: dict[str, str]) -> str | None:
    """``ValidateServiceMetadata``'s message, or None."""
    if len(meta) > 64:
        return "Node metadata cannot contain more than 64 key/value pairs"
    for key, value in meta.items():
        if not key:
            return "Key cannot be blank"
        if not _META_KEY.match(key):
            return f"Key contains invalid characters: {key}"
        if len(key) > 128:
            return f"Key is too long (limit: 128 characters): {key}"
        if key.startswith("consul-"):
            return f"Key prefix 'consul-' is reserved for internal use: {key}"
        if len(value) > 512:
            return f"Value is too long (limit: 512 characters): {key}"
    return None


def build_check(definition: dict[str, Any], *, default_id: str, default_name: str, service_id: str) -> CheckSpec:
    problem = validate_check(definition)
    if problem is not None:
        raise RegistrationError(f"Invalid check: {problem}")
    status = definition.get("Status") or CRITICAL
    if status not in STATUS_ORDER:
        raise RegistrationError("Status for checks must 'passing', 'warning', 'critical'")
    kind = check_type_of(definition)
    if kind in ("script", "docker"):
        raise RegistrationError(
            "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or "
            "'enable_local_script_checks' to true", status=500)
    timeout = _ns(definition, "Timeout") or DEFAULT_CHECK_TIMEOUT_NS
    shown = dict(definition)
    if kind in ("http", "tcp", "grpc", "udp", "h2ping"):
        shown["Timeout"] = format_go_duration(timeout)
    return CheckSpec(
        check_id=definition.get("CheckID") or default_id,
        name=definition.get("Name") or default_name,
        type=kind,
        status=status,
        notes=definition.get("Notes") or "",
        definition=shown,
        service_id=service_id,
        interval_ns=_ns(definition, "Interval"),
        timeout_ns=timeout,
        ttl_ns=_ns(definition, "TTL"),
        deregister_after_ns=_ns(definition, "DeregisterCriticalServiceAfter"),
        http=definition.get("HTTP") or "",
        method=definition.get("Method") or "GET",
        header=dict(definition.get("Header") or {}),
        body=definition.get("Body") or "",
        tcp=definition.get("TCP") or "",
        success_before_passing=int(definition.get("SuccessBeforePassing") or 0),
        failures_before_critical=int(definition.get("FailuresBeforeCritical") or 0),
        failures_before_warning=int(definition.get("FailuresBeforeWarning") or 0),
    )


def decode_registration(body: Any, *, node: str = "") -> Registration:
    """A service registration from a request body (any key case), or :class:`RegistrationError`."""
    try:
        data = decode(body, SERVICE_SCHEMA, strict=False)
    except DecodeError as exc:
        raise RegistrationError(f"Request decode failed: {exc}") from None
    if not isinstance(data, dict):
        raise RegistrationError("Request decode failed: EOF")
    name = data.get("Name") or ""
    if not name:
        raise RegistrationError("Missing service name")
    address = data.get("Address") or ""
    if address in _ANY_ADDRESSES:
        raise RegistrationError("Invalid service address")
    weights = data.get("Weights")
    if weights is not None:
        passing, warning = int(weights.get("Passing") or 0), int(weights.get("Warning") or 0)
        if passing < 1:
            raise RegistrationError("Invalid Weights: Passing must be greater than 0")
        if warning < 0:
            raise RegistrationError("Invalid Weights: Warning must be greater or equal than 0")
        weight_map = {"Passing": passing, "Warning": warning}
    else:
        weight_map = {"Passing": 1, "Warning": 1}
    meta = data.get("Meta") or {}
    problem = validate_meta(meta)
    if problem is not None:
        raise RegistrationError(f"Invalid Service Meta: {problem}")
    port = int(data.get("Port") or 0)
    if not 0 <= port <= 65535:
        raise RegistrationError(f"Validation failed: invalid port {port}")
    service_id = data.get("ID") or name
    service = ServiceRecord(
        node=node, service_id=service_id, name=name, port=port, address=address,
        tags=list(data.get("Tags") or []), meta=dict(meta),
        tagged_addresses={k: {"Address": v.get("Address", ""), "Port": int(v.get("Port") or 0)}
                          for k, v in (data.get("TaggedAddresses") or {}).items()},
        weights=weight_map, enable_tag_override=bool(data.get("EnableTagOverride")),
        kind=data.get("Kind") or "", locality=data.get("Locality") or None,
        socket_path=data.get("SocketPath") or "",
    )
    definitions = [d for d in ([data["Check"]] if data.get("Check") else []) + list(data.get("Checks") or []) if d]
    checks = []
    for position, definition in enumerate(definitions, start=1):
        default_id = f"service:{service_id}" + (f":{position}" if len(definitions) > 1 else "")
        checks.append(build_check(definition, default_id=default_id, default_name=f"Service '{name}' check",
                                  service_id=service_id))
    return Registration(service=service, checks=checks)
