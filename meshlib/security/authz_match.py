"""AuthorizationPolicy rules compiled to Python functions: what one inbound decision runs.

Each policy's rules become one generated function ``first_match(a) -> rule
index | None``: the request's attributes are read into locals once, and every
rule is one boolean expression of set look-ups, ``startswith``/``endswith``
with tuples, and (for CIDRs, path templates, hosts and ``when`` conditions)
calls of small prebuilt matchers. A 20-rule set then costs a few µs per
request instead of a tree of closures.

Only fixed templates and generated names (``_c0``, ``_c1``…) go into the
generated source; every value from a policy (a path, a principal, a CIDR) is
bound in the function's namespace, never written into code.

String matches follow Istio: exact, ``abc*`` (prefix), ``*abc`` (suffix),
``*`` (present: any non-empty value).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import re2

from meshlib.config.security_model import AuthzCondition, AuthzOperation, AuthzRule, AuthzSource

Matcher = Callable[[str], bool]


@dataclass(slots=True)
class InboundAttributes:
    """What a policy can look at, for one inbound request.

    ``principal`` is the peer's SPIFFE ID without the ``spiffe://`` scheme
    (``cluster.local/ns/default/sa/sleep``), "" without mTLS. ``path`` has no
    query string. ``headers`` maps lower-case names to values.
    ``request_principal`` stays "" (meshlib does not validate JWTs), so
    ``requestPrincipals`` never match and ``notRequestPrincipals`` always do.
    """

    method: str = "GET"
    path: str = "/"
    host: str | None = ""  # None: not known (grpc.aio servers do not see the :authority)
    port: int = 0
    source_ip: str = ""
    remote_ip: str = ""
    destination_ip: str = ""
    principal: str = ""
    sni: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    request_principal: str = ""


# ----------------------------------------------------------------------------- value matchers


def split_patterns(
    patterns: Iterable[str], *, ignore_case: bool = False
) -> tuple[set[str], list[str], list[str], bool]:
    """Istio string patterns → (exact values, prefixes, suffixes, "present" wanted)."""
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    present = False
    for raw in patterns:
        pattern = raw.lower() if ignore_case else raw
        if pattern == "*":
            present = True
        elif pattern.startswith("*"):
            suffixes.append(pattern[1:])
        elif pattern.endswith("*"):
            prefixes.append(pattern[:-1])
        else:
            exact.add(pattern)
    return exact, prefixes, suffixes, present


def string_matcher(patterns: Iterable[str], *, ignore_case: bool = False) -> Matcher:
    """Istio's string match over a list (ORed), as a function."""
    exact, prefixes, suffixes, present = split_patterns(patterns, ignore_case=ignore_case)
    prefix_tuple, suffix_tuple = tuple(prefixes), tuple(suffixes)

    def match(value: str) -> bool:
        if ignore_case:
            value = value.lower()
        if value in exact or (present and value):
            return True
        if prefix_tuple and value.startswith(prefix_tuple):
            return True
        return bool(suffix_tuple) and value.endswith(suffix_tuple)

    return match


@functools.lru_cache(maxsize=4096)
def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # Peers repeat: parsing an address costs more than the rest of a rule. Bounded: a flood of
    # new addresses only evicts.
    try:
        return ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None


def network_matcher(blocks: Iterable[str]) -> Matcher:
    """An address in any of ``blocks`` (single addresses or CIDR ranges)."""
    networks = tuple(ipaddress.ip_network(block, strict=False) for block in blocks)

    def match(value: str) -> bool:
        address = _address(value)
        if address is None:
            return False
        return any(address.version == net.version and address in net for net in networks)

    return match


def path_matcher(patterns: Iterable[str]) -> Matcher:
    """Istio's path match: string match plus ``{*}`` (one segment) and ``{**}`` (any) templates."""
    plain: list[str] = []
    templates: list[Any] = []
    for pattern in patterns:
        if "{*}" in pattern or "{**}" in pattern:
            templates.append(re2.compile(template_regex(pattern)))
        else:
            plain.append(pattern)
    strings = string_matcher(plain)
    if not templates:
        return strings
    compiled = tuple(templates)
    return lambda value: strings(value) or any(t.fullmatch(value) for t in compiled)


def template_regex(template: str) -> str:
    out: list[str] = []
    rest = template
    while rest:
        if rest.startswith("{**}"):
            out.append(".*")
            rest = rest[4:]
        elif rest.startswith("{*}"):
            out.append("[^/]+")
            rest = rest[3:]
        else:
            out.append(re2.escape(rest[0]))
            rest = rest[1:]
    return "".join(out)


def host_matcher(patterns: Iterable[str]) -> Matcher:
    """Istio's host match: case-insensitive, with or without the port the client wrote."""
    by_name = string_matcher(patterns, ignore_case=True)

    def match(value: str) -> bool:
        if by_name(value):
            return True
        host, sep, port = value.rpartition(":")
        return bool(sep) and port.isdigit() and by_name(host)

    return match


def principal_parts(principal: str) -> tuple[str, str]:
    """``td/ns/NS/sa/SA`` → (NS, SA); ("", "") when the principal has another shape."""
    parts = principal.split("/")
    if len(parts) >= 5 and parts[1] == "ns" and parts[3] == "sa":
        return parts[2], parts[4]
    return "", ""


def condition_check(condition: AuthzCondition) -> Callable[[InboundAttributes], bool]:
    """A ``when`` condition as a predicate; an absent attribute fails ``values`` and passes ``notValues``."""
    key = condition.key
    read: Callable[[InboundAttributes], str | None]
    matcher: Callable[..., Matcher] = string_matcher
    if key.startswith("request.headers["):
        name = key[len("request.headers[") : -1].lower()
        read = lambda a: a.headers.get(name)  # noqa: E731
    elif key.startswith("request.auth."):
        read = lambda a: None  # noqa: E731  (no validated JWT: the attribute is absent)
    elif key in ("source.ip", "remote.ip", "destination.ip"):
        matcher = network_matcher
        read = {
            "source.ip": lambda a: a.source_ip or None,
            "remote.ip": lambda a: (a.remote_ip or a.source_ip) or None,
            "destination.ip": lambda a: a.destination_ip or None,
        }[key]
    elif key == "source.namespace":
        read = lambda a: principal_parts(a.principal)[0] or None  # noqa: E731
    elif key == "source.principal":
        read = lambda a: a.principal or None  # noqa: E731
    elif key == "source.serviceAccount":
        read = lambda a: "/".join(principal_parts(a.principal)) if principal_parts(a.principal)[0] else None  # noqa: E731
    elif key == "destination.port":
        read = lambda a: str(a.port) if a.port else None  # noqa: E731
    elif key == "connection.sni":
        read = lambda a: a.sni or None  # noqa: E731
    else:  # validation rejects every other key
        raise ValueError(f"unsupported condition key {key!r}")
    yes = matcher(condition.values) if condition.values else None
    no = matcher(condition.not_values) if condition.not_values else None

    def check(a: InboundAttributes) -> bool:
        value = read(a)
        if yes is not None and (value is None or not yes(value)):
            return False
        return not (no is not None and value is not None and no(value))

    return check


# ----------------------------------------------------------------------------- code generation

# Locals the generated function may read, and how each is computed from the attributes ``a``.
_PREAMBLE = {
    "principal": "principal = a.principal",
    "ns": "ns, sa = _parts(a.principal)",
    "svc_account": "svc_account = ns + '/' + sa if ns else ''",
    "req_principal": "req_principal = a.request_principal",
    "src": "src = a.source_ip",
    "remote": "remote = a.remote_ip or a.source_ip",
    "host": "host = a.host",
    "port": "port = a.port",
    "method": "method = a.method",
    "path": "path = a.path",
    "headers": "headers = a.headers",
}
_PREAMBLE_ORDER = tuple(_PREAMBLE)
_NEEDS = {"svc_account": ("ns",)}


class _RuleCompiler:
    def __init__(self, *, unknown_host_matches: bool) -> None:
        self.names: dict[str, Any] = {"_parts": principal_parts}
        self.used: set[str] = set()
        self.unknown_host_matches = unknown_host_matches

    def bind(self, value: object) -> str:
        name = f"_c{len(self.names)}"
        self.names[name] = value
        return name

    def var(self, name: str) -> str:
        self.used.add(name)
        self.used.update(_NEEDS.get(name, ()))
        return name

    def strings(self, var: str, patterns: Sequence[str]) -> str:
        return self.strings_on(self.var(var), patterns)

    def call(self, matcher: Matcher, var: str) -> str:
        return f"{self.bind(matcher)}({self.var(var)})"

    def pair(
        self, positive: Sequence[Any], negative: Sequence[Any], build: Callable[[Sequence[Any]], str]
    ) -> list[str]:
        out = []
        if positive:
            out.append(build(positive))
        if negative:
            out.append(f"not {build(negative)}")
        return out

    def source(self, s: AuthzSource) -> str:
        terms: list[str] = []
        terms += self.pair(s.principals, s.not_principals, lambda p: self.strings("principal", p))
        terms += self.pair(s.request_principals, s.not_request_principals, lambda p: self.strings("req_principal", p))
        terms += self.pair(s.namespaces, s.not_namespaces, lambda p: self.strings("ns", p))
        terms += self.pair(s.service_accounts, s.not_service_accounts, lambda p: self.strings("svc_account", p))
        terms += self.pair(s.ip_blocks, s.not_ip_blocks, lambda p: self.call(network_matcher(p), "src"))
        terms += self.pair(
            s.remote_ip_blocks, s.not_remote_ip_blocks, lambda p: self.call(network_matcher(p), "remote")
        )
        return "(" + " and ".join(terms or ["True"]) + ")"

    def operation(self, o: AuthzOperation) -> str:
        terms: list[str] = []
        # grpc.aio servers do not see the :authority: with the host unknown, a host condition counts as
        # matched in DENY policies and as not matched in ALLOW ones, so the answer errs towards denying.
        unknown = repr(self.unknown_host_matches)
        if o.hosts:
            terms.append(f"({self.call(host_matcher(o.hosts), 'host')} if host is not None else {unknown})")
        if o.not_hosts:
            terms.append(f"(not {self.call(host_matcher(o.not_hosts), 'host')} if host is not None else {unknown})")
        if o.ports:
            terms.append(f"{self.var('port')} in {self.bind(frozenset(o.ports))}")
        if o.not_ports:
            terms.append(f"{self.var('port')} not in {self.bind(frozenset(o.not_ports))}")
        terms += self.pair(o.methods, o.not_methods, lambda p: self.strings("method", p))
        terms += self.pair(o.paths, o.not_paths, self._paths)
        return "(" + " and ".join(terms or ["True"]) + ")"

    def _paths(self, patterns: Sequence[str]) -> str:
        if any("{*}" in p or "{**}" in p for p in patterns):
            return self.call(path_matcher(patterns), "path")
        return self.strings("path", patterns)

    def rule(self, rule: AuthzRule) -> str:
        terms: list[str] = []
        if rule.sources is not None:
            terms.append("(" + " or ".join(self.source(s) for s in rule.sources) + ")" if rule.sources else "False")
        if rule.operations is not None:
            ops = [self.operation(o) for o in rule.operations]
            terms.append("(" + " or ".join(ops) + ")" if ops else "False")
        terms += [self.condition(c) for c in rule.conditions]
        return " and ".join(terms or ["True"])

    def condition(self, c: AuthzCondition) -> str:
        if not c.key.startswith("request.headers["):
            return f"{self.bind(condition_check(c))}(a)"
        # Inline: the header read once into a temporary; absent fails `values`, passes `notValues`.
        value = f"_h{len(self.names)}"
        self.names[value] = None  # reserve the name
        read = f"({value} := headers.get({self.bind(c.key[len('request.headers[') : -1].lower())}))"
        self.used.add("headers")
        terms = []
        if c.values:
            terms.append(f"{read} is not None and {self.strings_on(value, c.values)}")
        if c.not_values:
            head = read if not c.values else value
            terms.append(f"({head} is None or not {self.strings_on(value, c.not_values)})")
        return "(" + " and ".join(terms) + ")"

    def strings_on(self, value: str, patterns: Sequence[str]) -> str:
        exact, prefixes, suffixes, present = split_patterns(patterns)
        parts = []
        if exact:
            parts.append(f"{value} in {self.bind(frozenset(exact))}")
        if prefixes:
            parts.append(f"{value}.startswith({self.bind(tuple(prefixes))})")
        if suffixes:
            parts.append(f"{value}.endswith({self.bind(tuple(suffixes))})")
        if present:
            parts.append(f"{value} != ''")
        return "(" + " or ".join(parts) + ")"


FirstMatch = Callable[[InboundAttributes], "int | None"]


def compile_rules(rules: Sequence[AuthzRule], action: str) -> FirstMatch:
    """The rules of one policy (with ``action``) as ``first_match(attributes) -> rule index | None``."""
    compiler = _RuleCompiler(unknown_host_matches=action == "DENY")
    tests = [compiler.rule(rule) for rule in rules]
    lines = ["def first_match(a):"]
    lines += [f"    {_PREAMBLE[name]}" for name in _PREAMBLE_ORDER if name in compiler.used]
    lines += [f"    if {test}:\n        return {index}" for index, test in enumerate(tests)]
    lines.append("    return None")
    namespace = dict(compiler.names)
    exec(compile("\n".join(lines), f"<authz {action} policy>", "exec"), namespace)  # only generated names in the code
    function: FirstMatch = namespace["first_match"]
    return function
