"""DestinationRule spec validation (istio/api networking/v1 destination_rule.proto)."""

from __future__ import annotations

import re

from meshlib.config.annotations import rate_limit_annotation
from meshlib.config.fields import Fields, Sink, item_fields
from meshlib.config.hosts import host_problem
from meshlib.config.istio_checks import export_to_problems
from meshlib.config.istio_types import DestinationRuleSpec, Meta, PolicyParts, SubsetSpec
from meshlib.config.model import Labels, LbKind
from meshlib.config.parse_traffic_policy import POLICY_FIELDS, parse_traffic_policy

SPEC_FIELDS = frozenset({"host", "trafficPolicy", "subsets", "exportTo", "workloadSelector"})
SUBSET_FIELDS = frozenset({"name", "labels", "trafficPolicy"})
# meshlib extension: pick a balancer Envoy does not have, per DestinationRule.
LB_ANNOTATION = "meshlib.io/load-balancer"
LB_ANNOTATION_VALUES = {"PEAK_EWMA": LbKind.PEAK_EWMA}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def parse_destination_rule(sink: Sink, meta: Meta, spec: Fields) -> DestinationRuleSpec:
    """Validate one DestinationRule ``spec``; problems go to ``sink``."""
    host_value = spec.string("host", required=True)
    host = host_value or ""
    if host_value is not None:
        problem = host_problem(host)
        if problem:
            spec.error("host", problem)
    policy_fields = spec.mapping("trafficPolicy", POLICY_FIELDS)
    policy = parse_traffic_policy(sink, policy_fields) if policy_fields is not None else None

    subsets: list[SubsetSpec] = []
    names: set[str] = set()
    for path, node in spec.items("subsets"):
        subset = item_fields(sink, path, node, SUBSET_FIELDS)
        if subset is None:
            continue
        name = subset.string("name", required=True)
        labels = subset.labels("labels") or {}
        sub_policy_fields = subset.mapping("trafficPolicy", POLICY_FIELDS)
        sub_policy: PolicyParts | None = (
            parse_traffic_policy(sink, sub_policy_fields) if sub_policy_fields is not None else None
        )
        if name is None:
            continue
        if not _DNS_LABEL.match(name):
            subset.error("name", f'invalid subset name "{name}" (must be a DNS label)')
            continue
        if name in names:
            subset.error("name", f'duplicate subset name "{name}"')
            continue
        names.add(name)
        subsets.append(SubsetSpec(name, Labels(labels), sub_policy, node.line))

    export_to = spec.string_list("exportTo") or []
    for problem in export_to_problems(export_to, meta.namespace, service_entry=False):
        spec.error("exportTo", problem)
    selector_labels: Labels | None = None
    selector = spec.mapping("workloadSelector", ("matchLabels",))
    if selector is not None:
        labels = selector.labels("matchLabels") or {}
        selector_labels = Labels(labels)
        if not labels:
            selector.warn(None, "workload selector specified without labels")
        for key, value in labels.items():
            if "*" in key or "*" in value:
                selector.error("matchLabels", f'wildcard is not supported in selector: "{key}={value}"')
        if export_to and set(export_to) - {".", meta.namespace}:
            spec.error(
                "exportTo", "destination rule with workload selector cannot have exportTo beyond current namespace"
            )

    lb_override = None
    annotations = dict(meta.annotations)
    if LB_ANNOTATION in annotations:
        value = annotations[LB_ANNOTATION]
        lb_override = LB_ANNOTATION_VALUES.get(value)
        if lb_override is None:
            expected = ", ".join(LB_ANNOTATION_VALUES)
            sink.error(
                meta.annotation_line(LB_ANNOTATION),
                f'metadata.annotations["{LB_ANNOTATION}"]',
                f'unknown load balancer "{value}" (expected {expected})',
            )
    return DestinationRuleSpec(
        meta, host.lower(), spec.line("host"), policy, tuple(subsets), lb_override, selector_labels,
        rate_limit_annotation(sink, meta),
    )
