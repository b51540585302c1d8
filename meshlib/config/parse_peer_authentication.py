"""``security.istio.io`` PeerAuthentication: field validation by istiod's rules.

Rules (``ValidatePeerAuthentication`` in istio/istio ``pkg/config/validation``):
``mtls.mode`` one of UNSET, DISABLE, PERMISSIVE, STRICT; ``portLevelMtls``
keys are ports 1–65535 and need a ``selector`` (a namespace- or mesh-wide
policy cannot name ports); selector labels are valid Kubernetes labels
without wildcards. ``targetRef``/``targetRefs`` attach policies to gateways
and waypoints, which meshlib is not: refused rather than ignored.
"""

from __future__ import annotations

from meshlib.config.fields import Fields, Sink
from meshlib.config.istio_types import Meta
from meshlib.config.peer_authentication import MTLS_MODES, MtlsMode, PeerAuthenticationSpec

SPEC_FIELDS = frozenset({"selector", "mtls", "portLevelMtls", "targetRef", "targetRefs"})
MAX_PORTS = 1024


def parse_peer_authentication(sink: Sink, meta: Meta, spec: Fields) -> PeerAuthenticationSpec:
    """Validate one PeerAuthentication ``spec``; problems go to ``sink``."""
    for key in ("targetRef", "targetRefs"):
        if spec.has(key):
            spec.error(key, f"{key} attaches a policy to waypoints and gateways, which meshlib is not; use `selector`")
    selector: tuple[tuple[str, str], ...] | None = None
    selector_fields = spec.mapping("selector", ("matchLabels",))
    if selector_fields is not None:
        labels = selector_fields.labels("matchLabels") or {}
        for key, value in labels.items():
            if "*" in key or "*" in value:
                selector_fields.error("matchLabels", f'wildcard is not supported in selector: "{key}={value}"')
        selector = tuple(sorted(labels.items()))
    mode: MtlsMode = "UNSET"
    mtls = spec.mapping("mtls", ("mode",))
    if mtls is not None:
        mode = _mode(mtls.enum("mode", MTLS_MODES))
    ports: list[tuple[int, MtlsMode]] = []
    if spec.has("portLevelMtls"):
        if selector is None:
            spec.error("portLevelMtls", "portLevelMtls requires a workload selector")
        entries = spec.entries("portLevelMtls")
        if len(entries) > MAX_PORTS:
            spec.error("portLevelMtls", f"at most {MAX_PORTS} ports")
        for key, path, node in entries[:MAX_PORTS]:
            port = int(str(key)) if str(key).isdigit() else 0
            if not 1 <= port <= 65535:
                sink.error(node.line, path, f'port "{key}" must be a number in 1..65535')
                continue
            entry = Fields(sink, node, path, ("mode",)) if node.kind == "map" else None
            if entry is None:
                sink.error(node.line, path, f"expected a mapping with `mode`, got {node.type_name}")
                continue
            ports.append((port, _mode(entry.enum("mode", MTLS_MODES))))
    return PeerAuthenticationSpec(meta, selector, mode, tuple(ports))


def _mode(text: str | None) -> MtlsMode:
    for mode in MTLS_MODES:
        if mode == text:
            return mode
    return "UNSET"
