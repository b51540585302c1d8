"""Cross-resource checks: the names a VirtualService uses must exist.

Two kinds, kept apart on purpose:

- :func:`check_subsets` and :func:`check_delegates` concern only Istio YAML
  (subsets are defined by DestinationRules, delegates are VirtualServices),
  so they always run.
- :func:`check_destination_hosts` checks destination hosts (and ports) against
  the service registry. A registry that is not complete in the YAML (Consul,
  xDS) turns it off via ``compile_snapshot(..., check_hosts=False)``.

Istio accepts a route to a host no service defines and to a subset no
DestinationRule defines (``istioctl analyze`` reports them as IST0101
ReferencedResourceNotFound), and the sidecar then answers such requests 503
with flag ``NC`` (no cluster). meshlib does the same: these are *warnings*
with code IST0101, and the compiled route points at a cluster that does not
exist, so the request path answers 503 ``NC``. A missing delegate stays an
error.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from meshlib.config.istio_types import DestinationRef, HttpRuleSpec, VirtualServiceSpec
from meshlib.config.registry import Registry
from meshlib.errors import ConfigProblem


def destinations(rule: HttpRuleSpec) -> Iterator[DestinationRef]:
    """Every destination a rule sends traffic to (routes and mirrors)."""
    for route in rule.route:
        yield route.destination
    for mirror in rule.mirrors:
        yield mirror.destination


REFERENCE_NOT_FOUND = "IST0101"


def _problem(vs: VirtualServiceSpec, line: int, path: str, message: str) -> ConfigProblem:
    return ConfigProblem(vs.meta.file, line, vs.meta.kind, vs.meta.ref, path, message)


def _warning(vs: VirtualServiceSpec, line: int, path: str, message: str, code: str = "") -> ConfigProblem:
    return ConfigProblem(vs.meta.file, line, vs.meta.kind, vs.meta.ref, path, message, "warning", code)


def check_subsets(services: Sequence[VirtualServiceSpec], registry: Registry) -> list[ConfigProblem]:
    """Each destination ``subset`` must be defined by a DestinationRule for its host."""
    problems: list[ConfigProblem] = []
    for vs in services:
        for rule in vs.http:
            for dest in destinations(rule):
                if not dest.subset:
                    continue
                fqdn = registry.resolve(dest.host, vs.meta.namespace)
                merged = registry.rule_for(fqdn)
                if merged is None or dest.subset not in merged.subsets:
                    message = (
                        f'subset "{dest.subset}" is not defined by any DestinationRule for {fqdn} '
                        "(requests routed there get 503 NC)"
                    )
                    problems.append(
                        _warning(
                            vs, dest.subset_line or dest.line, f"{dest.path}.subset", message, REFERENCE_NOT_FOUND
                        )
                    )
    return problems


def check_destination_hosts(
    services: Sequence[VirtualServiceSpec], registry: Registry
) -> list[ConfigProblem]:
    """Each destination host must be a known service, and an explicit port one of its ports."""
    problems: list[ConfigProblem] = []
    for vs in services:
        for rule in vs.http:
            for dest in destinations(rule):
                fqdn = registry.resolve(dest.host, vs.meta.namespace)
                service = registry.service_for(fqdn)
                if service is None:
                    message = f'host "{fqdn}" is not defined by any ServiceEntry (requests routed there get 503 NC)'
                    problems.append(_warning(vs, dest.line, f"{dest.path}.host", message, REFERENCE_NOT_FOUND))
                elif dest.port is not None and all(p.number != dest.port for p in service.ports):
                    message = f"port {dest.port} is not a port of {service.fqdn} (requests routed there get 503 NC)"
                    problems.append(_warning(vs, dest.line, f"{dest.path}.port.number", message))
    return problems


def check_delegates(services: Sequence[VirtualServiceSpec]) -> list[ConfigProblem]:
    """A ``delegate`` must name an existing host-less VirtualService that delegates no further."""
    by_ref = {vs.meta.ref: vs for vs in services}
    problems: list[ConfigProblem] = []
    for vs in services:
        for rule in vs.http:
            if rule.delegate is None:
                continue
            ref = "/".join(rule.delegate)
            target = by_ref.get(ref)
            path = f"{rule.path}.delegate"
            if target is None:
                problems.append(_problem(vs, rule.line, path, f"delegate VirtualService {ref} not found"))
            elif target.hosts:
                message = f"VirtualService {ref} cannot be a delegate: it sets hosts"
                problems.append(_problem(vs, rule.line, path, message))
            elif not vs.hosts:
                problems.append(_problem(vs, rule.line, path, "nested delegation is not supported"))
    return problems
