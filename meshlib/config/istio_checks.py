"""Small rules shared by the Istio parsers, written after istio/istio ``pkg/config/validation``.

Each function returns why a value is not acceptable (``None`` when it is),
with the wording of Istio's own message where there is one, so a user who
knows ``kubectl apply``'s webhook errors recognises them. They are plain
predicates; the parsers decide the field path and whether the finding is an
error or (where Istio only warns) a warning.

>>> header_name_problem("x-user"), header_name_problem("bad header")
(None, 'header name bad header is not a valid header name')
>>> gateway_name_problem("istio-system/ingress"), gateway_name_problem("Istio/ingress")
(None, 'invalid value for namespace: "Istio"')
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# RFC 7230 token characters.
_TCHARS = re.compile(r"^[!#$%&'*+\-.^_`|~A-Za-z0-9]+$")
_PSEUDO_HEADERS = frozenset({":method", ":scheme", ":authority", ":path", ":status"})
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Header values Envoy refuses: control characters other than tab.
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
CORS_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*"})
RETRY_STATUS_CODES = frozenset(
    {100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307, 308}
    | set(range(400, 419))
    | {421, 422, 423, 424, 425, 426, 428, 429, 431, 451}
    | {500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511}
)  # the codes Go's http.StatusText knows, which is what Istio accepts in retryOn


def is_dns_label(text: str) -> bool:
    """A DNS-1123 label (lower case, ≤ 63 characters)."""
    return bool(_DNS_LABEL.match(text))


def header_name_problem(name: str, *, allow_pseudo: bool = True) -> str | None:
    """Istio ``ValidateHTTPHeaderNameOrJwtClaimRoute`` (without the JWT claim form)."""
    if not name:
        return "header name cannot be empty"
    if allow_pseudo and name in _PSEUDO_HEADERS:
        return None
    if not _TCHARS.match(name):
        return f"header name {name} is not a valid header name"
    return None


def header_operation_problem(name: str, *, request_set: bool) -> str | None:
    """Istio ``ValidateHTTPHeader(WithAuthority)OperationName``: a header a route may set, add or remove.

    ``request_set``: request ``set``/``add`` may write the authority (``host``
    / ``:authority``); every other operation may not touch it.
    """
    if not name:
        return "header name cannot be empty"
    lowered = name.lower()
    is_authority = lowered in ("host", ":authority")
    if request_set and is_authority:
        return None
    if lowered == "host":
        return f'invalid header "{name}": cannot set Host header'
    if name.startswith(":"):
        return f'invalid header "{name}": header cannot have ":" prefix'
    return None


def header_value_problem(value: str) -> str | None:
    """Istio ``ValidateHTTPHeaderValue``: no control characters; ``%`` only as ``%%`` or ``%NAME%``."""
    if _BAD_HEADER_VALUE.search(value):
        return f"header value configuration {value!r} is invalid"
    i = 0
    while i < len(value):
        if value[i] != "%":
            i += 1
            continue
        end = value.find("%", i + 1)
        if end < 0:
            return f"header value configuration: unterminated variable expression in {value!r}"
        i = end + 1
    return None


def cors_header_problem(name: str) -> str | None:
    """Istio ``ValidateCORSHTTPHeaderName``: a token or ``*``."""
    if not name:
        return "header name cannot be empty"
    if name == "*" or _TCHARS.match(name):
        return None
    return f"header name {name} is not a valid header name"


def gateway_name_problem(name: str) -> str | None:
    """Istio ``validateGatewayNames``: ``namespace/name`` of DNS labels, or a (legacy) FQDN."""
    namespace, slash, gateway = name.partition("/")
    if not slash:
        return fqdn_problem(name)
    if not namespace or not gateway:
        return "config namespace and gateway name cannot be empty"
    if not is_dns_label(namespace):
        return f'invalid value for namespace: "{namespace}"'
    if not is_dns_label(gateway):
        return f'invalid value for gateway name: "{gateway}"'
    return None


def fqdn_problem(name: str) -> str | None:
    """Istio ``ValidateFQDN``: ≤ 255 characters, DNS-1123 labels, a non-numeric top-level label."""
    if not name:
        return "empty domain name not allowed"
    if len(name) > 255:
        return f'domain name "{name}" too long (max 255)'
    labels = name.split(".")
    if labels[-1].isdigit():
        return f'domain name "{name}" invalid (top level domain "{labels[-1]}" cannot be all-numeric)'
    for i, label in enumerate(labels):
        if i == len(labels) - 1 and not label:
            break  # "istio.io." is allowed
        if not is_dns_label(label):
            return f'domain name "{name}" invalid (label "{label}" invalid)'
    return None


def export_to_problems(export_to: Sequence[str], namespace: str, *, service_entry: bool) -> list[str]:
    """Istio ``validateExportTo``: ``.``, ``*``, ``~`` (ServiceEntry only) or namespaces; no duplicates."""
    problems: list[str] = []
    seen: set[str] = set()
    for entry in export_to:
        key = namespace if entry == "." else entry
        if key in seen:
            if key != entry:
                problems.append(f"duplicate entries in exportTo: . and current namespace {namespace}")
            else:
                problems.append(f"duplicate entries in exportTo for entry {entry}")
            continue
        if entry == "~" and not service_entry:
            problems.append(f"invalid exportTo value: {entry!r} (only ServiceEntries may use ~)")
        elif entry not in (".", "*", "~") and not is_dns_label(entry):
            problems.append(f"invalid exportTo value: {entry!r} (expected ., *, or a namespace)")
        seen.add(key)
    if "*" in seen and len(export_to) > 1:
        problems.append("cannot have both public (*) and non-public exportTo values for a resource")
    if "~" in seen and len(export_to) > 1:
        problems.append("cannot export service entry to no one (~) and someone")
    return problems


def partial_wildcard_problem(host: str) -> str | None:
    """Istio ``ValidatePartialWildCard`` (a warning there): ``*`` only as a whole first label."""
    if "*" in host and host != "*" and not host.startswith("*."):
        return f'partial wildcard "{host}" not allowed'
    return None
