"""``mesh.explain_inbound`` / ``meshlib explain --inbound``: an authorization decision, nothing sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from meshlib.mesh_state import MeshState
from meshlib.security.authz import InboundAttributes
from meshlib.security.authz_inbound import normalise_path


def explain_inbound(
    state: MeshState,
    method: str,
    url: str,
    headers: Mapping[str, str],
    *,
    principal: str = "",
    source_ip: str = "",
) -> dict[str, Any]:
    """The decision for a request arriving at this workload, as a JSON-ready dict.

    Keys: ``allowed``, ``status`` (200 or 403), ``policy`` (``namespace/name``
    or null for the default rule), ``rule`` (index), ``reason``, ``audited``
    (AUDIT policies that matched), ``policies`` (every policy in force for the
    workload, in evaluation groups).
    """
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    lowered = {k.lower(): v for k, v in headers.items()}
    if principal.lower().startswith("spiffe://"):
        principal = principal[len("spiffe://") :]
    attributes = InboundAttributes(
        method=method.upper(),
        path=normalise_path(parts.path or "/"),
        host=lowered.get("host", parts.netloc),
        port=port,
        source_ip=source_ip,
        principal=principal,
        headers=lowered,
    )
    engine = state.authz
    if engine is None:
        return {
            "allowed": True,
            "status": 200,
            "policy": None,
            "rule": None,
            "reason": "no AuthorizationPolicy applies to this workload",
            "audited": [],
            "policies": {"deny": [], "allow": [], "audit": []},
        }
    result = engine.decide(attributes).as_dict()
    result["policies"] = {
        "deny": [p.ref for p in engine.deny],
        "allow": [p.ref for p in engine.allow],
        "audit": [p.ref for p in engine.audit],
    }
    return result
