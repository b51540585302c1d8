"""Istio ``PeerAuthentication`` (``security.istio.io``): what a workload's inbound side accepts.

:class:`PeerAuthenticationSpec` is one validated resource; :func:`resolve_inbound_mtls`
picks and composes the ones that apply to a workload the way istiod does
(``pilot/pkg/security/authn``): the mesh-wide policy (root namespace, no
selector; ``UNSET`` there means ``PERMISSIVE``), then the workload's namespace
policy (no selector), then a workload policy (same namespace, selector
matching the workload's labels) — each level overriding the mode unless it is
``UNSET`` — and finally the workload policy's ``portLevelMtls`` per port.
When several policies compete at one level, istiod takes the oldest; files
have no creation time, so meshlib takes the first in file order.

Kept free of imports from :mod:`meshlib.config.model` (the snapshot carries these).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from meshlib.config.istio_types import Meta  # (a runtime import would be circular: model → here)

MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]
MTLS_MODES: tuple[MtlsMode, ...] = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")
DEFAULT_ROOT_NAMESPACE = "istio-system"  # Istio's meshConfig.rootNamespace default


@dataclass(frozen=True, slots=True)
class PeerAuthenticationSpec:
    """One PeerAuthentication. ``selector`` None: namespace-wide (mesh-wide in the root namespace)."""

    meta: Meta
    selector: tuple[tuple[str, str], ...] | None
    mode: MtlsMode = "UNSET"
    port_modes: tuple[tuple[int, MtlsMode], ...] = ()

    @property
    def file(self) -> str:
        return self.meta.file

    @property
    def line(self) -> int:
        return self.meta.line

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def ref(self) -> str:
        return f"{self.meta.namespace}/{self.meta.name}"


@dataclass(frozen=True, slots=True)
class InboundMtls:
    """The resolved mTLS mode of one workload: a default and per-port overrides (never UNSET)."""

    mode: MtlsMode = "PERMISSIVE"
    ports: Mapping[int, MtlsMode] = field(default_factory=dict)
    policies: tuple[str, ...] = ()  # namespace/name of the policies that decided, for explain/status

    def mode_for(self, port: int | None) -> MtlsMode:
        """The mode in force on ``port`` (the workload default when None or not overridden)."""
        if port is None:
            return self.mode
        return self.ports.get(port, self.mode)

    @property
    def any_strict(self) -> bool:
        return self.mode == "STRICT" or "STRICT" in self.ports.values()


def resolve_inbound_mtls(
    policies: Iterable[PeerAuthenticationSpec],
    namespace: str,
    labels: Mapping[str, str],
    root_namespace: str = DEFAULT_ROOT_NAMESPACE,
) -> InboundMtls:
    """Istio's composition of the PeerAuthentications that apply to one workload (module docstring).

    ``resolve_inbound_mtls(snapshot.security.peer_authentication, "default", {"app": "reviews"})``
    gives e.g. ``InboundMtls(mode="STRICT", ports={8080: "DISABLE"}, policies=("istio-system/default",
    "default/reviews"))``; with no policy at all, ``PERMISSIVE``.
    """
    mesh_wide = namespace_wide = workload = None
    for policy in policies:
        if policy.selector is None:
            if policy.namespace == root_namespace and mesh_wide is None:
                mesh_wide = policy
            if policy.namespace == namespace and namespace_wide is None and namespace != root_namespace:
                namespace_wide = policy
        elif (
            policy.namespace == namespace
            and workload is None
            and all(labels.get(key) == value for key, value in policy.selector)
        ):
            workload = policy
    mode: MtlsMode = "PERMISSIVE"
    deciders: list[str] = []
    for level in (mesh_wide, namespace_wide, workload):
        if level is not None:
            deciders.append(level.ref)
            if level.mode != "UNSET":
                mode = level.mode
    ports: dict[int, MtlsMode] = {}
    if workload is not None:
        for port, port_mode in workload.port_modes:
            ports[port] = mode if port_mode == "UNSET" else port_mode
    return InboundMtls(mode, ports, tuple(deciders))
