"""The seams through which a test's fault controller acts inside the request stack.

:class:`~meshlib.resilience.attempts.UpstreamRunner` knows nothing about
tests. It reads one attribute per request, ``owner._faults`` (the mesh's
installed :class:`FaultInjector`, ``None`` normally), and only when one is
installed asks it for an :class:`InjectedRequest`: route-level faults run
before admission (Istio's fault filter sits before the router, so they are
never retried), and the attempt ``send`` is wrapped so that upstream faults
act per attempt, where retries, outlier detection and pool limits see them as
they would see a broken host. ``meshlib.testing.faults`` implements these.

:data:`BodyGuard` is the other seam: the adapter's way to keep the remaining
route / per-try deadline running over a response body that its caller reads
after the runner has returned.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from meshlib.config.model import Endpoint
    from meshlib.decision import Decision
    from meshlib.resilience.attempts import CallReport, LocalReply
    from meshlib.resilience.cluster_runtime import ClusterRuntime
    from meshlib.resilience.outcome import Outcome

R = TypeVar("R")

# (response, deadline in loop time, the cluster's counters, the counter to bump when it fires)
BodyGuard = Callable[[R, float, dict[str, int], str], None]
AttemptSend = Callable[["Endpoint", int, "float | None"], Awaitable[R]]


class InjectedRequest(Protocol[R]):
    """The faults that apply to one routed request."""

    async def before(self) -> LocalReply | None:
        """Route-level faults (delay, abort): an abort is the reply, ``None`` goes on."""

    def wrap(self, send: AttemptSend[R]) -> AttemptSend[R]:
        """``send`` with the upstream faults of each attempt applied."""

    def record(self, outcome: Outcome) -> None:
        """How the current attempt ended (for the attempt log)."""


class FaultInjector(Protocol):
    """Installed on a mesh as ``mesh._faults`` while a test's fault controller is active."""

    def begin(
        self, decision: Decision, runtime: ClusterRuntime, transport: str, report: CallReport | None
    ) -> InjectedRequest[Any] | None:
        """The faults for this request, or ``None`` when none applies to its destination."""


class FaultOwner(Protocol):
    """What the runner reads per request: the mesh's installed injector, if any."""

    _faults: FaultInjector | None


class _NoInjector:
    __slots__ = ()
    _faults: FaultInjector | None = None


NO_INJECTOR: FaultOwner = _NoInjector()
