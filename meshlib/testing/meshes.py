"""What the ``mesh`` and ``mesh_control_plane`` fixtures start.

``mesh_config`` (a fixture users override, or the ``mesh_config`` marker, or
the ``meshlib_config`` ini option) says where the configuration comes from:
``None`` (the embedded default), a path or list of paths (files or
directories of Istio YAML), or inline YAML text (a string with a newline).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshlib.controlplane.plane import ControlPlane
    from meshlib.mesh import Mesh

MeshConfig = str | Path | Sequence[str | Path] | None
BOOTSTRAP_ENV = "GRPC_XDS_BOOTSTRAP_CONFIG"


def config_paths(config: MeshConfig, directory: Path) -> list[str | Path]:
    """The files/directories ``config`` stands for; inline YAML is written to ``directory``/inline.yaml."""
    if config is None:
        from meshlib.mesh import default_config_path

        return [default_config_path()]
    if isinstance(config, str) and "\n" in config:
        directory.mkdir(parents=True, exist_ok=True)
        inline = directory / "inline.yaml"
        inline.write_text(config)
        return [inline]
    if isinstance(config, (str, Path)):
        return [config]
    return list(config)


MESH_DIRECTORY = "meshlib-mesh"  # the mesh fixture's directory under the test's tmp_path


def stubs_directory(directory: Path) -> Path:
    """Where :func:`started_mesh` on ``directory`` reads the stubs ``mesh_service`` registers (and the test
    control plane serves them from)."""
    return directory / "generated"


@contextlib.asynccontextmanager
async def started_mesh(config: MeshConfig, directory: Path, *, seed: int,
                       namespace: str = "default") -> AsyncIterator[Mesh]:
    """A started Mesh on ``config`` plus ``directory``/generated (where ``mesh_service`` registers stubs).

    Hot reload polls every 50 ms; the mesh's RNG is seeded with ``seed`` (the test's fault seed), so
    weighted routing and balancing replay too.
    """
    from meshlib.mesh import Mesh

    generated = stubs_directory(directory)
    generated.mkdir(parents=True, exist_ok=True)
    paths = [*config_paths(config, directory), generated]
    mesh = Mesh.from_files(*paths, namespace=namespace, poll_interval_s=0.05, rng=random.Random(seed))
    async with mesh:
        yield mesh


@dataclass
class TestControlPlane:
    """A running meshlib control plane: ``address`` for ``Mesh.from_xds``, ``bootstrap`` for grpcio's xDS."""

    __test__ = False  # not a test class, whatever pytest's collection rules say

    plane: ControlPlane
    bootstrap: dict[str, Any]
    config_paths: list[str | Path]

    @property
    def address(self) -> str:
        return self.plane.address

    @property
    def port(self) -> int:
        return self.plane.port


@contextlib.asynccontextmanager
async def started_control_plane(config: MeshConfig, directory: Path, *, node_id: str = "meshlib-test",
                                generated: Path | None = None) -> AsyncIterator[TestControlPlane]:
    """A control plane on a free loopback port serving ``config``, with ``GRPC_XDS_BOOTSTRAP_CONFIG``
    pointing grpcio's xDS client (``xds:///`` targets) at it until exit.

    ``generated``: a directory watched as well — the ``mesh`` fixture's, where ``mesh_service``
    registers its stubs, so the plane serves them to its xDS clients too.
    """
    import asyncio

    from meshlib.controlplane.plane import ControlPlane
    from meshlib.controlplane.sources import FileSnapshotSource
    from meshlib.xds.bootstrap import grpc_bootstrap

    paths = config_paths(config, directory)
    if generated is not None:
        generated.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a local directory, once per test
        paths.append(generated)
    source = FileSnapshotSource(paths, poll_interval_s=0.05)
    source.load()
    plane = ControlPlane(source, host="127.0.0.1", port=0, status_port=0)
    await plane.start()
    watcher: asyncio.Task[None] | None = None
    previous = os.environ.get(BOOTSTRAP_ENV)
    try:
        source.attach(plane)
        watcher = asyncio.get_running_loop().create_task(source.watch(), name="meshlib-test-control-plane")
        bootstrap = grpc_bootstrap(plane.address, node_id)
        os.environ[BOOTSTRAP_ENV] = json.dumps(bootstrap)
        yield TestControlPlane(plane, bootstrap, paths)
    finally:
        if previous is None:
            os.environ.pop(BOOTSTRAP_ENV, None)
        else:
            os.environ[BOOTSTRAP_ENV] = previous
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await plane.stop(grace=None)
