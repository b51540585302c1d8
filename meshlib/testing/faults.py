"""The fault controller behind the ``mesh_faults`` fixture: faults that act inside the mesh.

Faults are not patched into aiohttp (a patched ``ClientSession._request``
would bypass the mesh's own middleware): the controller installs itself on
every live :class:`~meshlib.Mesh` — however it was built, before or after the
controller — or only on those given to :meth:`MeshFaults.on`, and the
mesh's request stack consults it (``UpstreamRunner``; one attribute check per
request when no controller is active). Two levels, on aiohttp sessions and on
``mesh.grpc_channel()`` alike:

- **route level**, Istio's VirtualService ``fault``: :meth:`MeshFaults.delay`,
  :meth:`MeshFaults.abort` — before routing, never retried, flag ``FI``;
- **upstream level**, per attempt: :meth:`MeshFaults.upstream` then
  ``.refuse()``, ``.reset()``, ``.blackhole()``, ``.malformed()``,
  ``.status(503, times=2)``, ``.stall_body()``, ``.slow_body(s)``,
  ``.latency(s, jitter=)`` — the attempt meets a real broken server, so
  retries, outlier detection and pool limits react as to a broken host.

::

    def test_ratings_outage(mesh_faults, mesh):
        flaky = mesh_faults.upstream("ratings").status(503, times=1)
        ...                                     # traffic through the mesh
        assert flaky.injected == 1
        assert [a.flag for a in mesh_faults.attempts("ratings")] == ["-", "-"]
        assert mesh_faults.stats_delta("ratings")["upstream_rq_retry"] == 1

Draws (``percent``) come from the controller's own seeded RNG, so a failing
test replays with the same seed (``--mesh-fault-seed``).

As with a real broken host, nothing stops a hang but a timeout: ``blackhole``
and ``stall_body`` wait until the route or per-try timeout (or the call's
gRPC deadline) fires, and forever without one. The fault servers speak
plaintext: on a cluster whose DestinationRule ``tls`` is not ``DISABLE``,
``refuse``, ``reset``, ``blackhole`` and ``latency`` act as described, and the
faults that need an answer (``status``, ``malformed``, ``stall_body``,
``slow_body``) raise :class:`FaultNotApplicable` in the attempt instead of
turning silently into a TLS handshake failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from meshlib.errors import MeshError
from meshlib.testing.fault_servers import FaultServers
from meshlib.testing.fault_specs import (
    Attempt,
    Fault,
    RouteFault,
    UpstreamFault,
    draw,
    grpc_code,
    request_matches,
)

if TYPE_CHECKING:
    from meshlib.config.model import Endpoint
    from meshlib.decision import Decision
    from meshlib.mesh import Mesh
    from meshlib.resilience.attempts import CallReport, LocalReply
    from meshlib.resilience.cluster_runtime import ClusterRuntime
    from meshlib.resilience.injection import AttemptSend
    from meshlib.resilience.outcome import Outcome

__all__ = ["Attempt", "FaultNotApplicable", "MeshFaults", "RouteFault", "UpstreamFault", "grpc_code"]

_FLAGS = {"connect_failure": "UF", "reset": "UC", "reset_before_request": "UF", "refused_stream": "UR",
          "per_try_timeout": "UT", "protocol_error": "UPE", "overflow": "UO"}


class MeshFaults:
    """Declares faults, installs them on meshes, and records what they did. See the module docstring."""

    def __init__(self, *, seed: int | None = None) -> None:
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
        self.rng = random.Random(self.seed)
        self.route_faults: list[RouteFault] = []
        self.upstream_faults: list[UpstreamFault] = []
        self.declared: list[Fault] = []  # every fault ever declared, removed ones included (teardown checks)
        self.log: list[Attempt] = []
        self.servers = FaultServers()
        self._targets: list[Mesh] | None = None  # None: every live mesh
        self._baselines: dict[int, dict[str, dict[str, int]]] = {}
        self._meshes: list[weakref.ref[Mesh]] = []  # the meshes this controller is installed on
        self._active = False
        self.activate()

    # ------------------------------------------------------------------ installation

    def activate(self) -> None:
        """Install on every live mesh (or the :meth:`on` ones) and on meshes created from now on."""
        from meshlib.mesh import LIVE_MESHES, ON_NEW_MESH

        if self._active:
            return
        self._active = True
        for mesh in list(LIVE_MESHES):
            self._install(mesh)
        ON_NEW_MESH.append(self._install_new)

    def _install_new(self, mesh: Mesh) -> None:
        self._baselines[id(mesh)] = {}  # born during the test: every counter started at 0
        self._install(mesh)

    def _install(self, mesh: Mesh) -> None:
        if self._targets is not None and not any(mesh is t for t in self._targets):
            return
        if id(mesh) not in self._baselines:
            self._baselines[id(mesh)] = _counters(mesh)
        mesh._faults = self
        self._meshes.append(weakref.ref(mesh))

    def on(self, *meshes: Mesh) -> MeshFaults:
        """Act only on ``meshes`` (by default: every mesh alive during the test)."""
        self._targets = list(meshes)
        for ref in self._meshes:
            mesh = ref()
            if mesh is not None and mesh._faults is self:
                mesh._faults = None
        self._meshes.clear()
        for mesh in meshes:
            self._install(mesh)
        return self

    def close(self, *, check_unused: bool = True) -> list[Fault]:
        """Uninstall, stop the fault servers; returns the non-optional faults that matched nothing."""
        from meshlib.mesh import ON_NEW_MESH

        if self._active:
            self._active = False
            if self._install_new in ON_NEW_MESH:
                ON_NEW_MESH.remove(self._install_new)
            for ref in self._meshes:
                mesh = ref()
                if mesh is not None and mesh._faults is self:
                    mesh._faults = None
            self._meshes.clear()
        self.servers.close()
        self.route_faults.clear()
        self.upstream_faults.clear()
        if not check_unused:
            return []
        return [f for f in self.declared if f.seen == 0 and not f.optional]

    # ------------------------------------------------------------------ declaring faults

    def _forget(self, fault: Fault) -> None:
        for faults in (self.route_faults, self.upstream_faults):
            if fault in faults:
                faults.remove(fault)  # type: ignore[arg-type]

    def delay(self, host: str, seconds: float, *, percent: float = 100.0, subset: str | None = None,
              match: Mapping[str, object] | None = None, optional: bool = False) -> RouteFault:
        """Delay requests to ``host`` by ``seconds`` before routing (not counted in the route timeout).

        ``match`` narrows by ``path``, ``path_prefix``, ``method``, ``headers`` (exact values).
        """
        fault = RouteFault(host, delay_s=seconds, percent=percent, subset=subset, match=match, optional=optional,
                           remove=self._forget)
        self.route_faults.append(fault)
        self.declared.append(fault)
        return fault

    def abort(self, host: str, http_status: int | None = None, *, grpc_status: int | str | None = None,
              percent: float = 100.0, subset: str | None = None, match: Mapping[str, object] | None = None,
              optional: bool = False) -> RouteFault:
        """Answer requests to ``host`` locally with ``http_status`` / ``grpc_status`` (flag ``FI``), never retried."""
        code = grpc_code(grpc_status)
        if (http_status is None) == (code is None):
            raise ValueError("mesh_faults.abort needs exactly one of http_status= and grpc_status=")
        fault = RouteFault(host, http_status=http_status, grpc_status=code, percent=percent, subset=subset,
                           match=match, optional=optional, remove=self._forget)
        self.route_faults.append(fault)
        self.declared.append(fault)
        return fault

    def upstream(self, host: str, *, subset: str | None = None, endpoint: str | None = None,
                 cluster: str | None = None, percent: float = 100.0, optional: bool = False) -> UpstreamFault:
        """A broken upstream for ``host`` (narrowed to a subset, one ``ip:port`` endpoint or a cluster name)."""
        fault = UpstreamFault(host, subset=subset, endpoint=endpoint, cluster=cluster, percent=percent,
                              optional=optional, remove=self._forget)
        self.upstream_faults.append(fault)
        self.declared.append(fault)
        return fault

    # ------------------------------------------------------------------ what tests read

    def attempts(self, host: str = "*") -> list[Attempt]:
        """Every attempt to ``host`` while active, in order (route-level aborts as ``number`` 0)."""
        return [a for a in self.log if _cluster_host_matches(host, a.cluster)]

    def stats_delta(self, host: str = "*") -> dict[str, int]:
        """Counters of ``mesh.stats()`` summed over ``host``'s clusters, minus their values at the start."""
        delta: dict[str, int] = {}
        for ref in self._meshes:
            mesh = ref()
            if mesh is None:
                continue
            baseline = self._baselines.get(id(mesh), {})
            for name, counters in _counters(mesh).items():
                if not _cluster_host_matches(host, name):
                    continue
                before = baseline.get(name, {})
                for key, value in counters.items():
                    delta[key] = delta.get(key, 0) + value - before.get(key, 0)
        return delta

    # ------------------------------------------------------------------ the request path (FaultInjector)

    def begin(self, decision: Decision, runtime: ClusterRuntime, transport: str,
              report: CallReport | None) -> _InjectedRequest:
        return _InjectedRequest(self, decision, runtime, transport, report)


_GAUGE_PREFIXES = ("remaining_", "rq_", "cx_", "retry_budget")
# Upstream faults whose plaintext server must answer (on a TLS cluster the handshake would fail first).
_ANSWERING_ACTIONS = frozenset({"status", "malformed", "stall_body", "slow_body"})


class FaultNotApplicable(MeshError):
    """An upstream fault that cannot act as declared on the cluster it hit (raised in the attempt)."""


def _counters(mesh: Mesh) -> dict[str, dict[str, int]]:
    """Every cluster's counters (gauges such as ``upstream_rq_active`` left out: a delta of them means nothing)."""
    return {
        name: {
            k: v for k, v in values.items()
            if type(v) is int and not k.endswith("_active") and not k.startswith(_GAUGE_PREFIXES)
        }
        for name, values in mesh.stats()["clusters"].items()
    }


def _cluster_host_matches(host: str, cluster_name: str) -> bool:
    service = cluster_name.rpartition("|")[2]
    return host in ("*", service, cluster_name) or service.startswith(host + ".")


class _InjectedRequest:
    """The faults acting on one routed request, and its entries in the attempt log."""

    __slots__ = ("cluster", "current", "decision", "faults", "report", "runtime", "transport")

    def __init__(self, faults: MeshFaults, decision: Decision, runtime: ClusterRuntime, transport: str,
                 report: CallReport | None) -> None:
        self.faults = faults
        self.decision = decision
        assert decision.cluster is not None
        self.cluster = decision.cluster
        self.runtime = runtime
        self.transport = transport
        self.report = report
        self.current: Attempt | None = None

    async def before(self) -> LocalReply | None:
        from meshlib.resilience.attempts import LocalReply

        faults = self.faults
        request = self.decision.request
        abort: RouteFault | None = None
        for fault in list(faults.route_faults):
            if not fault.applies_to(self.cluster) or not request_matches(fault.match, request):
                continue
            fault.seen += 1
            if not draw(fault.percent, faults.rng):
                continue
            if fault.delay_s is not None:
                fault.injected += 1
                self.runtime.counters["fault_delays_injected"] += 1
                if self.report is not None:
                    self.report.delay_injected = True
                await asyncio.sleep(fault.delay_s)
            elif abort is None:
                fault.injected += 1
                abort = fault
        if abort is None:
            return None
        self.runtime.counters["fault_aborts_injected"] += 1
        faults.log.append(Attempt(0, None, self.cluster.name, abort.http_status or 0, abort.grpc_status, "FI",
                                  fault=abort.describe()))
        return LocalReply(abort.http_status or 200, "fault filter abort", "FI", grpc_status=abort.grpc_status)

    def wrap(self, send: AttemptSend[Any]) -> AttemptSend[Any]:
        async def faulty_send(endpoint: Endpoint, attempt: int, hint: float | None) -> Any:
            if self.current is not None:
                self.current.retried = True
            entry = self.current = Attempt(attempt, endpoint.key, self.cluster.name)
            self.faults.log.append(entry)
            fault = self._pick_fault(endpoint.key)
            if fault is not None:
                entry.fault = fault.describe()
                if fault.latency_s:
                    jitter = fault.jitter_s
                    rng = self.faults.rng
                    await asyncio.sleep(fault.latency_s + (rng.uniform(-jitter, jitter) if jitter else 0.0))
                if fault.action is not None:
                    address, port = self.faults.servers.address(
                        self.transport, fault.action, status=fault.status_code, grpc_status=fault.grpc_status,
                        seconds=fault.seconds,
                    )
                    endpoint = dataclasses.replace(endpoint, address=address, port=port)
            try:
                return await send(endpoint, attempt, hint)
            except asyncio.CancelledError:
                entry.flag = "UT"  # the route timeout (or the caller) ended it
                raise

        return faulty_send

    def _pick_fault(self, key: str) -> UpstreamFault | None:
        faults = self.faults
        for fault in list(faults.upstream_faults):
            if not fault.armed() or not fault.applies_to_attempt(self.cluster, key):
                continue
            self._check_applicable(fault)  # before any draw, delay or count: the fault could never act here
            fault.seen += 1
            if draw(fault.percent, faults.rng):
                fault.injected += 1
                return fault
        return None

    def _check_applicable(self, fault: UpstreamFault) -> None:
        tls_mode = self.cluster.policy.tls.mode
        if fault.action in _ANSWERING_ACTIONS and tls_mode != "DISABLE":
            raise FaultNotApplicable(
                f"mesh_faults: {fault.describe()} cannot act on {self.cluster.name}: its DestinationRule "
                f"tls is {tls_mode} and the fault servers speak plaintext, so the attempt would fail the "
                f"TLS handshake (503 UF) instead; on a TLS cluster use refuse(), reset(), blackhole() or "
                f"latency(), or a route-level abort()"
            )

    def record(self, outcome: Outcome) -> None:
        entry = self.current
        if entry is None:
            return
        if outcome.is_response:
            entry.status = outcome.http_status
            entry.grpc_status = outcome.grpc_status
            entry.flag = "-"
        else:
            entry.flag = _FLAGS.get(outcome.kind.value, "-")
