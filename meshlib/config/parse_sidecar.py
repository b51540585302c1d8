"""Sidecar validation (istio/api networking/v1 sidecar.proto), after istio's ``ValidateSidecar``.

What meshlib applies (see :mod:`meshlib.config.sidecar_scope`): ``egress[].hosts``
— which services and VirtualServices the calling workload sees — and
``outboundTrafficPolicy.mode``. ``ingress``, ``inboundConnectionPool``,
egress ``port``/``bind``/``captureMode`` and ``egressProxy`` configure the
proxy's listeners; they are validated and then ignored, with a warning.
"""

from __future__ import annotations

from meshlib.config.fields import Fields, Sink, item_fields
from meshlib.config.hosts import host_problem
from meshlib.config.istio_checks import is_dns_label, partial_wildcard_problem
from meshlib.config.istio_types import Meta, SidecarSpec
from meshlib.config.model import Labels

SPEC_FIELDS = frozenset({"workloadSelector", "ingress", "egress", "outboundTrafficPolicy", "inboundConnectionPool"})
EGRESS_FIELDS = frozenset({"port", "bind", "captureMode", "hosts"})
INGRESS_FIELDS = frozenset({"port", "bind", "captureMode", "defaultEndpoint", "tls", "connectionPool"})
PORT_FIELDS = frozenset({"number", "protocol", "name", "targetPort"})


def parse_sidecar(sink: Sink, meta: Meta, spec: Fields) -> SidecarSpec:
    """Validate one Sidecar ``spec``; problems go to ``sink``."""
    selector_labels: Labels | None = None
    selector = spec.mapping("workloadSelector", ("labels",))
    if selector is not None:
        labels = selector.labels("labels") or {}
        for key, value in labels.items():
            if "*" in key or "*" in value:
                selector.error("labels", f'wildcard is not supported in selector: "{key}={value}"')
        if not labels:
            selector.warn(None, "sidecar: workload selector specified without labels, will be applied to all "
                          "services in namespace")
        selector_labels = Labels(labels)
    if not any(spec.has(k) for k in ("egress", "ingress", "outboundTrafficPolicy", "inboundConnectionPool")):
        spec.error(None, "sidecar: empty configuration provided")

    for path, node in spec.items("ingress"):
        ingress = item_fields(sink, path, node, INGRESS_FIELDS)
        if ingress is not None:
            if ingress.require("port") is not None:
                _port(ingress)
            ingress.warn(None, "sidecar ingress listeners configure the proxy's inbound side; meshlib ignores them")
    if spec.has("inboundConnectionPool"):
        spec.warn("inboundConnectionPool", "ignored by meshlib (it configures the proxy's inbound side)")

    hosts: list[tuple[str, str]] = []
    egress_items = spec.items("egress")
    catch_all = 0
    for index, (path, node) in enumerate(egress_items):
        egress = item_fields(sink, path, node, EGRESS_FIELDS)
        if egress is None:
            continue
        if egress.has("port"):
            _port(egress)
            egress.warn("port", "port-specific egress listeners are applied to every port by meshlib")
        else:
            catch_all += 1
            if catch_all > 1:
                egress.error(None, "sidecar: egress can have only one listener with empty port")
            elif index != len(egress_items) - 1:
                egress.error(
                    None, "sidecar: the egress listener with empty port should be the last listener in the list"
                )
        egress.string("bind")
        egress.enum("captureMode", ("DEFAULT", "IPTABLES", "NONE"))
        entries = egress.string_list("hosts") or []
        if not entries:
            egress.error("hosts", "sidecar: egress listener must contain at least one host")
        for i, entry in enumerate(entries):
            problem = _egress_host_problem(entry)
            if problem:
                sink.error(egress.line("hosts"), f"{egress.at('hosts')}[{i}]", problem)
                continue
            namespace, _, host = entry.partition("/")
            hosts.append((meta.namespace if namespace == "." else namespace, host.lower()))

    mode = ""
    policy = spec.mapping("outboundTrafficPolicy", ("mode", "egressProxy"))
    if policy is not None:
        mode = policy.enum("mode", ("REGISTRY_ONLY", "ALLOW_ANY")) or ""
        if policy.has("egressProxy"):
            if mode != "ALLOW_ANY":
                policy.error(
                    "egressProxy", "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode"
                )
            policy.warn("egressProxy", "ignored by meshlib (passthrough traffic goes directly to its host)")
    return SidecarSpec(meta, selector_labels, tuple(hosts), mode, has_egress=bool(egress_items))


def _port(listener: Fields) -> None:
    port = listener.mapping("port", PORT_FIELDS)
    if port is None:
        return
    port.integer("number", 0, 65535)
    name = port.string("name")
    if name and not is_dns_label(name):
        port.error("name", f"invalid port name: {name}")
    port.string("protocol")
    if port.has("targetPort"):
        port.error("targetPort", "targetPort has no impact on Sidecars")


def _egress_host_problem(entry: str) -> str | None:
    """Istio ``ValidateNamespaceSlashWildcardHostname`` for a Sidecar egress host."""
    namespace, slash, host = entry.partition("/")
    if not slash or not namespace or not host:
        return f'host "{entry}" must be of the form namespace/dnsName'
    if namespace not in ("*", ".", "~") and not is_dns_label(namespace):
        return f'invalid namespace value "{namespace}" in host "{entry}"'
    if host != "*" and "." not in host:
        return f'host "{entry}": short names (non FQDN) are not allowed'
    return host_problem(host) or partial_wildcard_problem(host)
