"""ServiceEntry spec validation (istio/api networking/v1 service_entry.proto)."""

from __future__ import annotations

from meshlib.config.fields import Fields, Sink, item_fields
from meshlib.config.hosts import host_problem, is_ip, is_ip_or_cidr, resolve_host
from meshlib.config.istio_checks import export_to_problems, is_dns_label, partial_wildcard_problem
from meshlib.config.istio_types import Meta, ServiceEntrySpec, WorkloadEndpoint
from meshlib.config.model import Labels, Locality, ServicePort

SPEC_FIELDS = frozenset(
    {
        "hosts",
        "addresses",
        "ports",
        "location",
        "resolution",
        "endpoints",
        "workloadSelector",
        "exportTo",
        "subjectAltNames",
    }
)
PORT_FIELDS = frozenset({"number", "protocol", "name", "targetPort"})
ENDPOINT_FIELDS = frozenset({"address", "ports", "labels", "network", "locality", "weight", "serviceAccount"})
# DYNAMIC_DNS (newer Istio): resolve each request's own host; in-process that is what NONE does.
RESOLUTIONS = ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS")
_HTTP_OR_TLS = frozenset({"HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "TLS"})
LOCATIONS = ("MESH_EXTERNAL", "MESH_INTERNAL")
# Istio's protocol names; matched case-insensitively as Istio does.
PROTOCOLS = frozenset(
    {"HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "REDIS", "MYSQL", "TCP", "TLS", "UDP", "THRIFT"}
)
UNIX_PREFIX = "unix://"


def parse_service_entry(sink: Sink, meta: Meta, spec: Fields) -> ServiceEntrySpec:
    """Validate one ServiceEntry ``spec``; problems go to ``sink``."""
    hosts: list[tuple[str, int]] = []
    host_items = spec.items("hosts")
    if not host_items:
        spec.error("hosts" if spec.has("hosts") else None, "at least one host is required")
    for path, node in host_items:
        if node.kind != "scalar" or not isinstance(node.scalar, str):
            sink.error(node.line, path, f"expected string, got {node.type_name}")
            continue
        problem = host_problem(node.scalar, allow_star=False)
        if problem:
            sink.error(node.line, path, problem)
            continue
        partial = partial_wildcard_problem(node.scalar)
        if partial:
            sink.warn(node.line, path, f"{partial} (matched as a plain suffix)")
        hosts.append((resolve_host(node.scalar, meta.namespace), node.line))

    cidr = False
    for path, node in spec.items("addresses"):
        if node.kind != "scalar" or not isinstance(node.scalar, str) or not is_ip_or_cidr(node.scalar):
            sink.error(node.line, path, f'invalid address "{node.scalar}" (expected an IP or CIDR)')
        else:
            cidr = cidr or "/" in node.scalar

    ports = _ports(sink, spec)
    resolution = spec.enum("resolution", RESOLUTIONS) or "NONE"
    if cidr and resolution not in ("NONE", "STATIC"):
        spec.error("addresses", "CIDR addresses are allowed only for NONE/STATIC resolution types")
    if resolution != "NONE" and len(hosts) > 1:
        # Istio: plain TCP cannot tell several hosts apart (an unset protocol counts as not HTTP).
        declared = [item.mapping.get("protocol") for _, item in spec.items("ports") if item.kind == "map"]
        for protocol in declared:
            name = protocol.scalar if protocol is not None and isinstance(protocol.scalar, str) else ""
            if name.upper() not in _HTTP_OR_TLS:
                spec.error("ports", "multiple hosts provided with non-HTTP, non-TLS ports")
                break
    location = spec.enum("location", LOCATIONS) or "MESH_EXTERNAL"
    for problem in export_to_problems(spec.string_list("exportTo") or [], meta.namespace, service_entry=True):
        spec.error("exportTo", problem)
    subject_alt_names = tuple(spec.string_list("subjectAltNames") or ())
    selector = spec.mapping("workloadSelector", ("labels",))
    selector_labels: dict[str, str] | None = None
    if selector is not None:
        selector_labels = selector.labels("labels") or {}
        if not selector_labels:
            selector.warn(
                None, "service entry: workload selector specified without labels, will be applied to all services"
            )
        for key, value in selector_labels.items():
            if "*" in key or "*" in value:
                selector.error("labels", f'wildcard is not supported in selector: "{key}={value}"')
        if resolution == "NONE":
            spec.warn("workloadSelector", "workloadSelector should not be set when resolution mode is NONE")
    if spec.has("workloadSelector") and spec.has("endpoints"):
        spec.error("workloadSelector", "workloadSelector and endpoints cannot both be set")

    port_names = {p.name for p in ports if p.name}
    endpoints: list[WorkloadEndpoint] = []
    has_unix = False
    for path, node in spec.items("endpoints"):
        endpoint = item_fields(sink, path, node, ENDPOINT_FIELDS)
        if endpoint is None:
            continue
        parsed = _endpoint(endpoint, resolution, port_names)
        if parsed is not None:
            has_unix = has_unix or parsed.address.startswith(UNIX_PREFIX)
            endpoints.append(parsed)

    if resolution == "NONE" and endpoints:
        spec.error("endpoints", "no endpoints should be provided for resolution NONE")
    if resolution == "DNS_ROUND_ROBIN" and len(endpoints) > 1:
        spec.error("endpoints", "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN")
    if has_unix and len(ports) != 1:
        spec.error("ports", "exactly 1 service port is required for unix endpoints")
    if resolution in ("DNS", "DNS_ROUND_ROBIN") and not spec.has("endpoints"):
        for host, line in hosts:
            if host.startswith("*"):
                sink.error(
                    line,
                    spec.at("hosts"),
                    f'wildcard host "{host}" needs endpoints with resolution {resolution}',
                )
    return ServiceEntrySpec(
        meta, tuple(hosts), tuple(ports), resolution, location, tuple(endpoints), subject_alt_names,
        workload_selector=Labels(selector_labels) if selector_labels is not None else None,
    )


def _ports(sink: Sink, spec: Fields) -> list[ServicePort]:
    ports: list[ServicePort] = []
    numbers: set[int] = set()
    names: set[str] = set()
    for path, node in spec.items("ports"):
        port = item_fields(sink, path, node, PORT_FIELDS)
        if port is None:
            continue
        number = port.integer("number", 1, 65535, required=True)
        name = port.string("name", required=True) or ""
        if port.has("name") and not is_dns_label(name):
            port.error("name", f'invalid port name "{name}" (must be a DNS-1123 label)')
        protocol = port.string("protocol")
        target = port.integer("targetPort", 1, 65535)
        if protocol is not None and protocol.upper() not in PROTOCOLS:
            port.error("protocol", f'unknown protocol "{protocol}"')
        if number is not None and number in numbers:
            port.error("number", f"duplicate port {number}")
            continue
        if number is not None:
            numbers.add(number)
        # Istio also rejects two unnamed ports; meshlib only checks names that are set.
        if name:
            if name in names:
                port.error("name", f'duplicate port name "{name}"')
            names.add(name)
        if number is not None:
            ports.append(ServicePort(number, (protocol or "HTTP").upper(), name, target))
    return ports


def workload_endpoint(endpoint: Fields, resolution: str, port_names: set[str] | None) -> WorkloadEndpoint | None:
    """A WorkloadEntry spec (inline in a ServiceEntry, or a WorkloadEntry resource).

    ``resolution`` "" (a standalone WorkloadEntry) accepts an IP or a hostname;
    ``port_names`` None skips the check that ports name service ports.
    """
    return _endpoint(endpoint, resolution, port_names)


def _endpoint(endpoint: Fields, resolution: str, port_names: set[str] | None) -> WorkloadEndpoint | None:
    address = endpoint.string("address", required=True)
    labels = endpoint.labels("labels") or {}
    locality = endpoint.string("locality") or ""
    weight = endpoint.integer("weight", 0, 2**32 - 1)
    endpoint.string("network")
    endpoint.string("serviceAccount")
    ports: list[tuple[str, int]] = []
    for name, path, value in endpoint.entries("ports"):
        number = value.scalar
        if value.kind != "scalar" or isinstance(number, bool) or not isinstance(number, int):
            endpoint.sink.error(value.line, path, f"expected integer, got {value.type_name}")
        elif not 1 <= number <= 65535:
            endpoint.sink.error(value.line, path, "must be between 1 and 65535")
        elif port_names is not None and name not in port_names:
            endpoint.sink.error(value.line, path, f'port name "{name}" is not defined by the service entry')
        else:
            ports.append((name, number))
    if address is None:
        return None
    if address.startswith(UNIX_PREFIX):
        if resolution != "STATIC":
            endpoint.error("address", "unix:// endpoints require resolution STATIC")
            return None
        if ports:
            endpoint.error("ports", f"unix endpoint {address} must not include ports")
    elif resolution == "STATIC":
        if not is_ip(address):
            endpoint.error(
                "address", f'endpoint address "{address}" is not an IP address (resolution STATIC)'
            )
            return None
    elif host_problem(address, allow_star=False) is not None or address.startswith("*"):
        endpoint.error("address", f'invalid endpoint address "{address}"')
        return None
    # Weight 0 means "unset" in the proto; Envoy needs ≥ 1.
    return WorkloadEndpoint(address, tuple(ports), Labels(labels), Locality.parse(locality), weight or 1)
