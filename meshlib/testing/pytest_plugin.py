"""meshlib's pytest plugin: fault injection inside the mesh, and meshes / stub services for tests.

Installed with meshlib (entry point ``pytest11``), so these fixtures need no
import: ``mesh_faults``, ``mesh``, ``mesh_config``, ``mesh_service``,
``mesh_control_plane``, ``consul_agent``, ``mesh_fault_seed``; markers
``mesh_fault``, ``mesh_faults``, ``mesh_config``; option ``--mesh-fault-seed``;
ini option ``meshlib_config``. See README "Testing with meshlib".

It loads into every test run of every project that installs meshlib, so it
imports nothing heavy up front (meshlib itself is imported when a fixture is
used). Turn it off with ``-p no:meshlib``; with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``
turn it on with ``-p meshlib.testing.pytest_plugin``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from meshlib.mesh import Mesh
    from meshlib.testing.faults import MeshFaults
    from meshlib.testing.meshes import MeshConfig, TestControlPlane
    from meshlib.testing.services import MeshServices

pytest.register_assert_rewrite("meshlib.testing.faults", "meshlib.testing.fault_specs")

_SEED = pytest.StashKey[int]()
_CALL_FAILED = pytest.StashKey[bool]()
_FAULT_KEYS = frozenset({
    "delay", "abort", "grpc_abort", "upstream", "status", "grpc_status", "times", "latency", "jitter", "seconds",
    "percent", "subset", "match", "optional", "endpoint", "cluster",
})


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("meshlib", "meshlib fault injection")
    group.addoption(
        "--mesh-fault-seed", type=int, default=None, metavar="N",
        help="seed for mesh fault draws and test meshes' RNG (a failing test prints the one it used)",
    )
    parser.addini("meshlib_config", "default Istio YAML file or directory for the mesh fixture "
                  "(relative to the rootdir)", default="")


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "mesh_fault(host, delay=|abort=|grpc_abort=|upstream=, percent=100, subset=, match=, optional=False, "
        "status=, times=, latency=, jitter=, endpoint=, cluster=): a fault active for the whole test (meshlib)",
        "mesh_faults(seed=None, assert_all_used=True): settings of the test's mesh_faults controller (meshlib)",
        "mesh_config(path_or_yaml): the configuration of the test's mesh fixture (meshlib)",
    ):
        config.addinivalue_line("markers", line)


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = config.getoption("--mesh-fault-seed")
    return f"meshlib: mesh fault seed {seed}" if seed is not None else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    seed = item.stash.get(_SEED, None)
    if report.failed and seed is not None:
        report.sections.append(
            ("meshlib faults", f"mesh fault seed {seed}; replay with: pytest --mesh-fault-seed={seed} {item.nodeid}")
        )
    return report


# ---------------------------------------------------------------------- fixtures


@pytest.fixture
def mesh_fault_seed(request: pytest.FixtureRequest) -> int:
    """The seed of this test's fault draws and test meshes: marker ``mesh_faults(seed=)``,
    else ``--mesh-fault-seed``, else a fresh random one (printed when the test fails)."""
    marker = request.node.get_closest_marker("mesh_faults")
    seed = marker.kwargs.get("seed") if marker is not None else None
    if seed is None:
        seed = request.config.getoption("--mesh-fault-seed")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "big")
    request.node.stash[_SEED] = int(seed)
    return int(seed)


@pytest.fixture
def mesh_faults(request: pytest.FixtureRequest, mesh_fault_seed: int) -> Iterator[MeshFaults]:
    """The fault controller: faults on every mesh of the test (sync; usable from sync and async tests).

    Teardown removes every fault and fails the test when a declared fault matched no request
    (``optional=True`` per fault, or ``@pytest.mark.mesh_faults(assert_all_used=False)``).
    """
    from meshlib.testing.faults import MeshFaults

    settings = request.node.get_closest_marker("mesh_faults")
    unknown = set(settings.kwargs) - {"seed", "assert_all_used"} if settings is not None else set()
    if unknown or (settings is not None and settings.args):
        pytest.fail(f"@pytest.mark.mesh_faults takes seed= and assert_all_used= only, got {sorted(unknown)}")
    assert_all_used = bool(settings.kwargs.get("assert_all_used", True)) if settings is not None else True
    controller = MeshFaults(seed=mesh_fault_seed)
    problem = None
    try:
        for marker in reversed(list(request.node.iter_markers("mesh_fault"))):  # outermost first
            _declare(controller, marker)
    except (TypeError, ValueError) as error:
        problem = f"@pytest.mark.mesh_fault: {error}"
    if problem is not None:
        controller.close(check_unused=False)
        pytest.fail(problem, pytrace=False)
    yield controller
    unused = controller.close(check_unused=assert_all_used)
    if unused and not request.node.stash.get(_CALL_FAILED, False):
        listed = "; ".join(f.describe() for f in unused)
        pytest.fail(
            f"mesh faults declared but never matched a request: {listed} (seed {mesh_fault_seed}). "
            "Pass optional=True to the fault or use @pytest.mark.mesh_faults(assert_all_used=False).",
            pytrace=False,
        )


def _declare(controller: MeshFaults, marker: pytest.Mark) -> None:
    if len(marker.args) != 1:
        raise TypeError(f"takes the host as its one positional argument, got {marker.args!r}")
    host = str(marker.args[0])
    kwargs = dict(marker.kwargs)
    unknown = set(kwargs) - _FAULT_KEYS
    if unknown:
        raise TypeError(f"unknown argument(s) {sorted(unknown)}; known: {sorted(_FAULT_KEYS)}")
    common = {k: kwargs[k] for k in ("percent", "subset", "optional") if k in kwargs}
    kinds = [k for k in ("delay", "abort", "grpc_abort", "upstream") if k in kwargs]
    if len(kinds) != 1:
        raise TypeError(f"needs exactly one of delay=, abort=, grpc_abort=, upstream= (got {kinds})")
    if "delay" in kwargs:
        controller.delay(host, float(kwargs["delay"]), match=kwargs.get("match"), **common)
    elif "abort" in kwargs or "grpc_abort" in kwargs:
        controller.abort(host, kwargs.get("abort"), grpc_status=kwargs.get("grpc_abort"), match=kwargs.get("match"),
                         **common)
    else:
        fault = controller.upstream(host, endpoint=kwargs.get("endpoint"), cluster=kwargs.get("cluster"), **common)
        action = str(kwargs["upstream"])
        times = kwargs.get("times")
        if action == "status":
            fault.status(int(kwargs.get("status", 503)), grpc_status=kwargs.get("grpc_status"), times=times)
        elif action == "slow_body":
            fault.slow_body(float(kwargs.get("seconds", 1.0)), times=times)
        elif action in ("refuse", "reset", "blackhole", "malformed", "stall_body"):
            getattr(fault, action)(times=times)
        elif action != "latency":
            raise ValueError(f"unknown upstream fault {action!r}")
        if "latency" in kwargs:
            fault.latency(float(kwargs["latency"]), jitter=float(kwargs.get("jitter", 0.0)))


@pytest.fixture
def mesh_config(request: pytest.FixtureRequest) -> MeshConfig:
    """Where the ``mesh`` fixture's configuration comes from; override this fixture to choose.

    Default: the ``mesh_config`` marker's argument (a path, or inline YAML), else the
    ``meshlib_config`` ini option (relative to the rootdir), else meshlib's embedded default mesh.
    """
    marker = request.node.get_closest_marker("mesh_config")
    if marker is not None:
        if len(marker.args) != 1:
            pytest.fail("@pytest.mark.mesh_config takes one argument: a path or inline YAML", pytrace=False)
        value = marker.args[0]
        return value if isinstance(value, (str, Path)) else list(value)
    configured = str(request.config.getini("meshlib_config") or "")
    if configured:
        return request.config.rootpath / configured
    return None


@pytest.fixture
def consul_agent() -> Iterator[Any]:
    """meshlib's Consul emulator on a free loopback port, in a thread of its own (so sync clients such as
    py-consul work from sync and async tests), with ``CONSUL_HTTP_ADDR`` set while it runs.

    Gives :class:`meshlib.testing.consul.fixtures.ThreadedEmulator`: ``.address``, ``.url``, ``.emulator``
    (``add_service``, ``set_check_status``, ``go_down`` …), ``.call(fn, *args)`` for coroutine controls.
    """
    try:
        from meshlib.testing.consul import consul_emulator_in_thread
    except ImportError as missing:  # pragma: no cover - shipped with meshlib; guards a partial install
        pytest.skip(f"consul_agent: meshlib's Consul emulator is not available ({missing})")
    with consul_emulator_in_thread() as agent:
        yield agent


try:
    import pytest_asyncio

    _HAVE_PYTEST_ASYNCIO = True
except ImportError:  # pragma: no cover - without pytest-asyncio there is no loop to run a mesh in
    _HAVE_PYTEST_ASYNCIO = False


if _HAVE_PYTEST_ASYNCIO:

    @pytest_asyncio.fixture
    async def mesh(mesh_config: MeshConfig, mesh_fault_seed: int, tmp_path: Path) -> AsyncIterator[Mesh]:
        """A started :class:`meshlib.Mesh` on ``mesh_config`` (hot reload every 50 ms, RNG seeded with
        ``mesh_fault_seed``), stopped at teardown. Works in pytest-asyncio's strict and auto modes."""
        from meshlib.testing.meshes import MESH_DIRECTORY, started_mesh

        async with started_mesh(mesh_config, tmp_path / MESH_DIRECTORY, seed=mesh_fault_seed) as started:
            yield started

    @pytest_asyncio.fixture
    async def mesh_service(mesh: Mesh, tmp_path: Path) -> AsyncIterator[MeshServices]:
        """Start loopback stub services registered in ``mesh``: ``await mesh_service("ratings", version="v1")``."""
        from meshlib.testing.meshes import MESH_DIRECTORY, stubs_directory
        from meshlib.testing.services import MeshServices

        services = MeshServices(mesh, stubs_directory(tmp_path / MESH_DIRECTORY), mesh.snapshot.workload.namespace)
        try:
            yield services
        finally:
            await services.close()

    @pytest_asyncio.fixture
    async def mesh_control_plane(mesh_config: MeshConfig, tmp_path: Path) -> AsyncIterator[TestControlPlane]:
        """meshlib's control plane on a free loopback port serving ``mesh_config`` and the stubs
        ``mesh_service`` starts, with ``GRPC_XDS_BOOTSTRAP_CONFIG`` set for proxyless gRPC
        (``xds:///`` targets) while it runs."""
        from meshlib.testing.meshes import MESH_DIRECTORY, started_control_plane, stubs_directory

        generated = stubs_directory(tmp_path / MESH_DIRECTORY)  # where mesh_service writes
        async with started_control_plane(mesh_config, tmp_path / "meshlib-control-plane", generated=generated) as plane:
            yield plane

else:  # pragma: no cover

    @pytest.fixture
    def mesh() -> None:
        pytest.skip("the mesh fixture needs pytest-asyncio (pip install pytest-asyncio)")

    @pytest.fixture
    def mesh_service() -> None:
        pytest.skip("the mesh_service fixture needs pytest-asyncio (pip install pytest-asyncio)")

    @pytest.fixture
    def mesh_control_plane() -> None:
        pytest.skip("the mesh_control_plane fixture needs pytest-asyncio (pip install pytest-asyncio)")

