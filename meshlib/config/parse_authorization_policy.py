"""``security.istio.io`` AuthorizationPolicy: field validation, Istio's rules.

The rules are those of istiod's validation (``ValidateAuthorizationPolicy``
and ``pkg/config/security``): DENY and CUSTOM need ``rules``; ``from.source``
and ``to.operation`` must not be empty; no empty values; IPs and CIDRs, ports
and path templates well formed; ``serviceAccounts`` not mixed with
``namespaces``/``principals``; ``when`` keys from Istio's attribute list.

Two things Istio accepts are refused here, because meshlib cannot honour them
in-process and a policy that silently does nothing is a security hole:
``action: CUSTOM`` (an external authorizer) and ``targetRef``/``targetRefs``
(which attach policies to waypoints and gateways, not to workloads).
"""

from __future__ import annotations

import ipaddress

import re2

from meshlib.config.fields import Fields, Sink, item_fields
from meshlib.config.istio_types import Meta
from meshlib.config.security_model import (
    AuthorizationPolicySpec,
    AuthzAction,
    AuthzCondition,
    AuthzOperation,
    AuthzRule,
    AuthzSource,
    PolicyOrigin,
)

SPEC_FIELDS = frozenset({"selector", "targetRef", "targetRefs", "rules", "action", "provider"})
RULE_FIELDS = frozenset({"from", "to", "when"})
SOURCE_FIELDS = {
    "principals": "principals",
    "notPrincipals": "not_principals",
    "requestPrincipals": "request_principals",
    "notRequestPrincipals": "not_request_principals",
    "namespaces": "namespaces",
    "notNamespaces": "not_namespaces",
    "serviceAccounts": "service_accounts",
    "notServiceAccounts": "not_service_accounts",
    "ipBlocks": "ip_blocks",
    "notIpBlocks": "not_ip_blocks",
    "remoteIpBlocks": "remote_ip_blocks",
    "notRemoteIpBlocks": "not_remote_ip_blocks",
}
OPERATION_FIELDS = {
    "hosts": "hosts",
    "notHosts": "not_hosts",
    "ports": "ports",
    "notPorts": "not_ports",
    "methods": "methods",
    "notMethods": "not_methods",
    "paths": "paths",
    "notPaths": "not_paths",
}
CONDITION_FIELDS = frozenset({"key", "values", "notValues"})
ACTIONS = ("ALLOW", "DENY", "AUDIT", "CUSTOM")
MAX_RULES = 1024  # per policy; istiod has no limit, but every rule costs on every inbound request
MAX_VALUES = 1024  # per field

# Condition attributes (istio.io/latest/docs/reference/config/security/conditions/).
_PLAIN_KEYS = frozenset(
    {
        "source.ip",
        "remote.ip",
        "source.namespace",
        "source.principal",
        "source.serviceAccount",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "destination.ip",
        "destination.port",
        "connection.sni",
    }
)
_MAP_KEYS = ("request.headers", "request.auth.claims")
_IP_KEYS = frozenset({"source.ip", "remote.ip", "destination.ip"})
# Istio: a path template must not use named variables, "{}", "/*" or "/**" segments.
_BAD_PATH_TEMPLATE = re2.compile(r"\/{\w+\=\*[*]?\}|{\w*\}|\/\*[*]?|\*[*]?\/")


def parse_authorization_policy(sink: Sink, meta: Meta, spec: Fields) -> AuthorizationPolicySpec:
    """Validate one AuthorizationPolicy ``spec``; problems go to ``sink``."""
    action_text = spec.enum("action", ACTIONS) or "ALLOW"
    if action_text == "CUSTOM":
        spec.error(
            "action",
            "CUSTOM (an external authorizer) is not supported by meshlib: the policy would not be enforced; "
            "use ALLOW/DENY rules, or enforce it in a gateway",
        )
    if spec.has("provider") and action_text != "CUSTOM":
        spec.error("provider", f"`provider` must not be set with a non CUSTOM action, found {action_text}")
    for key in ("targetRef", "targetRefs"):
        if spec.has(key):
            spec.error(
                key,
                f"{key} attaches a policy to waypoints and gateways, which meshlib is not; "
                "use `selector` to choose workloads",
            )
    selector = _selector(spec)
    rules = _rules(spec)
    if rules is None and action_text == "DENY":
        spec.error(
            None,
            "DENY action without `rules` is meaningless as it will never be triggered, "
            "add an empty rule `{}` if you want it be triggered for every request",
        )
    origin = PolicyOrigin(meta.file, meta.line, meta.namespace, meta.name)
    action: AuthzAction = "ALLOW" if action_text == "CUSTOM" else action_text  # type: ignore[assignment]
    return AuthorizationPolicySpec(origin, action, selector, rules)


def _selector(spec: Fields) -> tuple[tuple[str, str], ...] | None:
    selector = spec.mapping("selector", ("matchLabels",))
    if selector is None:
        return None
    labels = selector.labels("matchLabels") or {}  # label syntax already refuses "*" (istiod: no wildcards)
    return tuple(sorted(labels.items()))


def _rules(spec: Fields) -> tuple[AuthzRule, ...] | None:
    if not spec.has("rules"):
        return None
    items = spec.items("rules")
    if len(items) > MAX_RULES:
        spec.error("rules", f"at most {MAX_RULES} rules per policy")
        items = items[:MAX_RULES]
    rules: list[AuthzRule] = []
    for path, node in items:
        fields = item_fields(spec.sink, path, node, RULE_FIELDS)
        if fields is None:
            continue
        sources = _clauses(fields, "from", "source", SOURCE_FIELDS, _source)
        operations = _clauses(fields, "to", "operation", OPERATION_FIELDS, _operation)
        conditions = tuple(c for c in (_condition(fields, p, n) for p, n in fields.items("when")) if c is not None)
        rules.append(AuthzRule(sources, operations, conditions, node.line))  # type: ignore[arg-type]
    return tuple(rules)


def _clauses(fields: Fields, key: str, inner: str, known: dict[str, str], build: object) -> tuple[object, ...] | None:
    """``from``/``to``: a list of ``{source: …}`` / ``{operation: …}``; None when the list is absent."""
    node = fields.get(key)
    if node is None:
        return None
    items = fields.items(key)
    if not items and node.kind == "seq":
        fields.error(key, f"`{key}` must not be empty")
    out = []
    for path, item in items:
        wrapper = item_fields(fields.sink, path, item, (inner,))
        if wrapper is None:
            continue
        message = wrapper.mapping(inner, known)
        if message is None:
            if not wrapper.has(inner):
                wrapper.error(None, f"`{key}.{inner}` must not be nil")
            continue
        values = {attr: _values(message, name) for name, attr in known.items()}
        if not any(values.values()):
            message.error(None, f"`{key}.{inner}` must not be empty")
            continue
        out.append(build(message, values))  # type: ignore[operator]
    return tuple(out)


def _values(message: Fields, name: str) -> tuple[str, ...]:
    values = message.string_list(name) or []
    if len(values) > MAX_VALUES:
        message.error(name, f"at most {MAX_VALUES} values")
        values = values[:MAX_VALUES]
    if any(v == "" for v in values):
        message.error(name, f"empty value not allowed, found in {name[0].upper()}{name[1:]}")
    return tuple(v for v in values if v)


def _source(message: Fields, values: dict[str, tuple[str, ...]]) -> AuthzSource:
    identity = values["principals"] or values["not_principals"] or values["namespaces"] or values["not_namespaces"]
    if identity and (values["service_accounts"] or values["not_service_accounts"]):
        message.error(None, "cannot set serviceAccounts with namespaces or principals")
    for attr in ("service_accounts", "not_service_accounts"):
        for account in values[attr]:
            if account.count("/") != 1 or account.startswith("/") or account.endswith("/"):
                message.error(_camel(attr), f'"{account}": a service account is written "namespace/name"')
    for attr in ("ip_blocks", "not_ip_blocks", "remote_ip_blocks", "not_remote_ip_blocks"):
        for block in values[attr]:
            problem = ip_problem(block)
            if problem:
                message.error(_camel(attr), problem)
    return AuthzSource(**values)


def _operation(message: Fields, values: dict[str, tuple[str, ...]]) -> AuthzOperation:
    ports: dict[str, tuple[int, ...]] = {}
    for attr in ("ports", "not_ports"):
        numbers = []
        for text in values[attr]:
            if not text.isdigit() or int(text) > 65535:
                message.error(_camel(attr), f"bad port ({text})")
            else:
                numbers.append(int(text))
        ports[attr] = tuple(numbers)
    for attr in ("paths", "not_paths"):
        for path in values[attr]:
            if ("{*}" in path or "{**}" in path) and _BAD_PATH_TEMPLATE.search(path):
                message.error(_camel(attr), f'"{path}": invalid or unsupported path template')
    return AuthzOperation(
        hosts=values["hosts"],
        not_hosts=values["not_hosts"],
        ports=ports["ports"],
        not_ports=ports["not_ports"],
        methods=values["methods"],
        not_methods=values["not_methods"],
        paths=values["paths"],
        not_paths=values["not_paths"],
    )


def _condition(rule: Fields, path: str, node: object) -> AuthzCondition | None:
    fields = item_fields(rule.sink, path, node, CONDITION_FIELDS)  # type: ignore[arg-type]
    if fields is None:
        return None
    key = fields.string("key", required=True)
    values = tuple(fields.string_list("values") or ())
    not_values = tuple(fields.string_list("notValues") or ())
    if key is None:
        return None
    if not key:
        fields.error("key", "`key` must not be empty")
        return None
    if not values and not not_values:
        fields.error(None, f"at least one of `values` or `notValues` must be set for key {key}")
        return None
    problem = condition_key_problem(key)
    if problem:
        fields.error("key", problem)
        return None
    for name, listed in (("values", values), ("notValues", not_values)):
        if any(v == "" for v in listed):
            fields.error(name, f"empty value not allowed, found in {key}")
        for value in listed:
            if key in _IP_KEYS and (problem := ip_problem(value)):
                fields.error(name, problem)
            if key == "destination.port" and (not value.isdigit() or int(value) > 65535):
                fields.error(name, f"bad port ({value})")
    return AuthzCondition(key, tuple(v for v in values if v), tuple(v for v in not_values if v))


def condition_key_problem(key: str) -> str | None:
    """Why ``key`` is not a usable ``when`` attribute, or None."""
    if key in _PLAIN_KEYS:
        return None
    for prefix in _MAP_KEYS:
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            if rest.startswith("[") and rest.endswith("]") and len(rest) > 2:
                return None
            return f"bad key ({key}): should have format a[b]"
    if key.startswith("experimental.envoy.filters."):
        return f"attribute {key} reads Envoy filter metadata, which meshlib does not have"
    if key == "destination.namespace":
        return f"attribute {key} is replaced by the metadata.namespace"
    if key.startswith("destination.labels"):
        return f"attribute {key} is replaced by the workload selector"
    if key in ("destination.name", "destination.user"):
        return f"deprecated attribute {key}: only supported in v1alpha1"
    return f"unknown attribute: {key}"


def ip_problem(text: str) -> str | None:
    """Why ``text`` is not an IP address or CIDR range, or None."""
    try:
        if "/" in text:
            ipaddress.ip_network(text, strict=False)
        else:
            ipaddress.ip_address(text)
    except ValueError:
        return f"bad CIDR range ({text})" if "/" in text else f"bad IP address ({text})"
    return None


def _camel(attr: str) -> str:
    head, *rest = attr.split("_")
    return head + "".join(part.capitalize() for part in rest)
