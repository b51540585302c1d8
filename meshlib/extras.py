"""Optional dependencies (pip extras): one clear line instead of a ``ModuleNotFoundError`` traceback.

The base install (``pip install meshlib``) covers files, routing, resilience,
aiohttp, telemetry and the admin view. gRPC needs ``meshlib[grpc]``; xDS
(``Mesh.from_xds``, ``meshlib control-plane``, proxyless channels) needs
``meshlib[xds]``. Code that needs an extra imports it inside
:func:`require_extra`::

    with require_extra("xds", "Mesh.from_xds"):
        from meshlib.discovery.xds import XdsConfigSource

and a missing module becomes :class:`MissingExtra`, whose message is the whole
story: ``Mesh.from_xds needs the 'xds' extra: pip install 'meshlib[xds]'``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from meshlib.errors import MeshError

__all__ = ["EXTRA_MODULES", "MissingExtra", "require_extra"]

#: The top-level modules each extra brings (what a ModuleNotFoundError may name).
EXTRA_MODULES: Final[dict[str, frozenset[str]]] = {
    "grpc": frozenset({"grpc"}),
    "xds": frozenset({"grpc", "grpc_csds", "envoy", "xds", "udpa", "validate", "google"}),
    "consul": frozenset({"consul"}),
    "otel": frozenset({"opentelemetry"}),
}


class MissingExtra(MeshError, ImportError):
    """A feature was used whose optional dependencies are not installed; the message names the extra."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        self.feature = feature
        self.extra = extra
        self.module = module
        super().__init__(f"{feature} needs the '{extra}' extra (no module {module!r}): pip install 'meshlib[{extra}]'")


@contextmanager
def require_extra(extra: str, feature: str) -> Iterator[None]:
    """Turn a missing module of ``extra`` imported inside the block into :class:`MissingExtra`.

    A missing module that is not the extra's (a bug, not an install choice)
    propagates unchanged.

    >>> try:
    ...     with require_extra("consul", "Mesh.from_consul"):
    ...         raise ModuleNotFoundError("No module named 'consul'", name="consul")
    ... except MissingExtra as exc:
    ...     print(exc.extra, exc.module)
    consul consul
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        name = exc.name or ""
        if name.split(".")[0] not in EXTRA_MODULES.get(extra, frozenset()):
            raise
        raise MissingExtra(feature, extra, name) from None
