"""Istio YAML for the interop tests: one ``reviews`` service with subsets v1/v2 on loopback backends."""

from __future__ import annotations

from pathlib import Path

FQDN = "reviews.default.svc.cluster.local"


def service_yaml(port: int, protocol: str, v1_port: int, v2_port: int) -> str:
    """ServiceEntry (static endpoints 127.0.0.1:v1_port / :v2_port) and a DestinationRule with subsets."""
    name = protocol.lower()
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{FQDN}]
  location: MESH_INTERNAL
  ports:
  - {{number: {port}, name: {name}, protocol: {protocol}}}
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{{name}: {v1_port}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{{name}: {v2_port}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: {FQDN}
  trafficPolicy:
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}
    connectionPool:
      http: {{http2MaxRequests: 1000}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""


def _destination(subset: str, weight: int | None = None) -> str:
    weight_field = "" if weight is None else f", weight: {weight}"
    return f"    - {{destination: {{host: {FQDN}, subset: {subset}}}{weight_field}}}\n"


def virtual_service(default: dict[str, int], *, fault_route: bool = False) -> str:
    """A VirtualService: ``x-canary: true`` → v2; optionally ``x-fault: abort`` → a 503 abort; default → weights.

    The default route also carries retries, a timeout and a (rare) delay fault,
    so that a client accepting it has accepted all three.
    """
    fault = ""
    if fault_route:
        fault = (
            "  - name: fault\n"
            "    match:\n"
            "    - headers:\n"
            "        x-fault: {exact: abort}\n"
            "    fault:\n"
            "      abort: {httpStatus: 503, percentage: {value: 100}}\n"
            "    route:\n" + _destination("v1")
        )
    if len(default) == 1:
        default_route = _destination(next(iter(default)))
    else:
        default_route = "".join(_destination(subset, weight) for subset, weight in default.items())
    return (
        "apiVersion: networking.istio.io/v1\n"
        "kind: VirtualService\n"
        "metadata: {name: reviews, namespace: default}\n"
        "spec:\n"
        f"  hosts: [{FQDN}]\n"
        "  http:\n"
        "  - name: canary\n"
        "    match:\n"
        "    - headers:\n"
        '        x-canary: {exact: "true"}\n'
        "    route:\n" + _destination("v2") + fault + "  - name: default\n"
        "    retries: {attempts: 2, perTryTimeout: 2s, retryOn: 'unavailable,cancelled,5xx,connect-failure'}\n"
        "    timeout: 5s\n"
        "    fault:\n"
        "      delay: {fixedDelay: 1ms, percentage: {value: 1}}\n"
        "    route:\n" + default_route
    )


def write_config(path: Path, text: str) -> None:
    """Replace ``path`` atomically (the watcher never sees a half-written file)."""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
