"""Helpers for the meshlib xDS client tests: a control plane serving a YAML config to meshlib clients."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from meshlib.config import load_snapshot
from meshlib.controlplane import ControlPlane
from meshlib.xds import ClientKind, encode_resources

WAIT = 10.0  # bound on every awaited event


def serve_yaml(cp: ControlPlane, paths: Sequence[str | Path]) -> None:
    """Publish the Istio YAML at ``paths`` to the plane's meshlib clients, as our control plane would."""
    cp.set_resources(ClientKind.MESHLIB, encode_resources(load_snapshot(list(paths)), ClientKind.MESHLIB))


def plane() -> ControlPlane:
    return ControlPlane(port=0, debounce_after=0.0)
