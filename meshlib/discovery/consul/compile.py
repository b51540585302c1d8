"""Consul state → :class:`MeshSnapshot` (work in progress)."""

from __future__ import annotations

from collections.abc import Sequence

from meshlib.config.istio_types import IstioResource
from meshlib.config.model import MeshSnapshot, WorkloadIdentity
from meshlib.discovery.consul.state import ConsulState
from meshlib.errors import ConfigProblem


def compile_consul(
    state: ConsulState,
    workload: WorkloadIdentity,
    *,
    overlay: Sequence[IstioResource] = (),
) -> tuple[MeshSnapshot, list[ConfigProblem]]:
    """Compile Consul state (plus an optional Istio overlay) into a snapshot for ``workload``.

    Invalid config entries are dropped and reported in the returned problem list.
    """
    raise NotImplementedError("compile_consul is being written")
