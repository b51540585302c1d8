"""Host names as Istio resolves and validates them.

Istio's ``ResolveShortnameToFQDN``: a name without a dot is a Kubernetes
short name, ``reviews`` in namespace ``default`` → ``reviews.default.svc.cluster.local``;
anything with a dot is taken as written. meshlib adds one convenience on top
(documented deviation): a one-dot name ``name.namespace`` becomes
``name.namespace.svc.cluster.local`` **when such a service exists**, because
that is what users coming from Kubernetes DNS expect ``reviews.prod`` to mean;
otherwise it is kept as is (``example.com`` stays ``example.com``).

meshlib also resolves short names in ServiceEntry ``hosts`` (Istio takes
ServiceEntry hosts literally): here ServiceEntries play the role Kubernetes
Services play in Istio, so ``hosts: [reviews]`` must define the same service
that a VirtualService's ``reviews`` refers to.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Container

CLUSTER_DOMAIN = "svc.cluster.local"

_IPV4 = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def resolve_host(host: str, namespace: str, known: Container[str] = ()) -> str:
    """Resolve ``host`` written in a resource of ``namespace`` to the name Istio matches on."""
    name = host.lower()
    if name == "*" or name.startswith("*."):
        # Wildcards never get the cluster suffix ("*" alone means every host).
        return name
    if "." not in name:
        return f"{name}.{namespace}.{CLUSTER_DOMAIN}"
    if name.count(".") == 1:
        candidate = f"{name}.{CLUSTER_DOMAIN}"
        if candidate in known:
            return candidate
    return name


def is_cluster_local(fqdn: str) -> bool:
    """True for ``<name>.<namespace>.svc.cluster.local`` names."""
    parts = fqdn.split(".")
    return len(parts) == 5 and fqdn.endswith("." + CLUSTER_DOMAIN) and parts[0] != "*"


def host_matches(pattern: str, host: str) -> bool:
    """Istio host matching: exact, ``*`` (everything) or ``*suffix`` (``*.example.com``; the
    partial wildcard ``*example.com`` is Envoy's plain suffix match)."""
    if pattern == host:
        return True
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        if host.startswith("*"):
            # A wildcard service is covered by an equal or broader wildcard.
            return host[1:].endswith(pattern[1:])
        return host.endswith(pattern[1:])
    return False


def host_problem(host: str, *, allow_star: bool = True) -> str | None:
    """Why ``host`` is not a valid DNS name or wildcard, or None when it is."""
    if not host:
        return "host must not be empty"
    if host == "*":
        return None if allow_star else f'invalid host "{host}"'
    if len(host) > 255:
        return f'invalid host "{host}": longer than 255 characters'
    if is_ip(host):
        return None
    labels = host.lower().split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()  # "istio.io." (a rooted name) is allowed
    first = labels[0]
    if first.startswith("*"):
        # Istio's wildcard label: "*", or "*" / "*-" followed by a DNS label ("*.x", "*x.com", "*-x.com").
        rest = first[2:] if first.startswith("*-") else first[1:]
        if rest and not _LABEL.match(rest):
            return f'invalid host "{host}"'
        labels = labels[1:]
    for label in labels:
        if not _LABEL.match(label):
            return f'invalid host "{host}"'
    if labels and labels[-1].isdigit():
        return f'invalid host "{host}": the top-level label cannot be all-numeric'
    return None


def is_ip(text: str) -> bool:
    """True for an IPv4 or IPv6 address (no port, no prefix length)."""
    if _IPV4.match(text):  # fast path: ipaddress costs ~30 µs, and files list thousands of endpoints
        return True
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_ip_or_cidr(text: str) -> bool:
    """True for an address or a CIDR block (ServiceEntry ``addresses``)."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True
