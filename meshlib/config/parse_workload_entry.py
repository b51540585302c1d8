"""WorkloadEntry validation (istio/api networking/v1 workload_entry.proto).

A WorkloadEntry describes one workload outside Kubernetes; a ServiceEntry
with ``workloadSelector`` takes the WorkloadEntries of its namespace whose
labels it selects as its endpoints (see :mod:`meshlib.config.registry`).
Istio's rules (``validateWorkloadEntry``): an address is required (an IP, a
hostname, or ``unix://``), ports are DNS-label names to valid port numbers,
labels are valid Kubernetes labels.
"""

from __future__ import annotations

from dataclasses import replace

from meshlib.config.fields import Fields, Sink
from meshlib.config.istio_checks import is_dns_label
from meshlib.config.istio_types import Meta, WorkloadEndpoint, WorkloadEntrySpec
from meshlib.config.model import Labels
from meshlib.config.parse_service_entry import ENDPOINT_FIELDS, workload_endpoint

SPEC_FIELDS = ENDPOINT_FIELDS


def parse_workload_entry(sink: Sink, meta: Meta, spec: Fields) -> WorkloadEntrySpec:
    """Validate one WorkloadEntry ``spec``; problems go to ``sink``."""
    for name, path, value in spec.entries("ports"):
        if not is_dns_label(name):
            sink.error(value.line, path, f'invalid port name "{name}" (must be a DNS-1123 label)')
    endpoint = workload_endpoint(spec, "", None) or WorkloadEndpoint("")
    labels = {**dict(meta.labels), **dict(endpoint.labels.items())}
    return WorkloadEntrySpec(meta, replace(endpoint, labels=Labels(labels)))
