"""What a test declares: route-level faults, upstream faults, and the attempt log entries.

Each fault counts ``seen`` (requests or attempts it matched) and
``injected`` (those it acted on), is removed by leaving its ``with`` block or
by :meth:`Fault.remove`, and, unless ``optional=True``, fails the test at
teardown when it matched nothing — a fault that never met traffic usually
means the test does not exercise what it claims.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshlib.config.model import Cluster
    from meshlib.request import RequestView

MATCH_KEYS = ("path", "path_prefix", "method", "headers")
UPSTREAM_ACTIONS = ("refuse", "reset", "blackhole", "malformed", "status", "stall_body", "slow_body")
_PER_MILLION = 10_000  # percent → parts per million, as Istio's FractionalPercent
_GRPC_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9, "ABORTED": 10,
    "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}


def grpc_code(value: int | str | None) -> int | None:
    """A gRPC status as its number: ``14``, ``"UNAVAILABLE"`` or ``grpc.StatusCode.UNAVAILABLE``."""
    if value is None or isinstance(value, int):
        return value
    name = getattr(value, "name", value)
    if str(name).upper() not in _GRPC_CODES:
        raise ValueError(f"unknown gRPC status {value!r}; one of {sorted(_GRPC_CODES)}")
    return _GRPC_CODES[str(name).upper()]


def host_matches(pattern: str, cluster: Cluster) -> bool:
    """``ratings`` / ``ratings.default`` / the FQDN, or ``*``, against the cluster's service."""
    service = cluster.service
    return pattern in ("*", service) or service.startswith(pattern + ".")


def check_match(match: Mapping[str, object] | None) -> dict[str, object]:
    if not match:
        return {}
    unknown = sorted(set(match) - set(MATCH_KEYS))
    if unknown:
        raise ValueError(f"mesh fault match: unknown key(s) {unknown}; known: {list(MATCH_KEYS)}")
    headers = match.get("headers", {})
    if not isinstance(headers, Mapping):
        raise ValueError("mesh fault match: headers must be a mapping of name → exact value")
    return dict(match)


def request_matches(match: Mapping[str, object], request: RequestView | None) -> bool:
    if not match:
        return True
    if request is None:
        return False
    path = request.path.partition("?")[0]
    if "path" in match and path != match["path"]:
        return False
    if "path_prefix" in match and not path.startswith(str(match["path_prefix"])):
        return False
    if "method" in match and request.method.upper() != str(match["method"]).upper():
        return False
    headers = match.get("headers")
    if isinstance(headers, Mapping):
        for name, value in headers.items():
            if request.headers.get(str(name).lower()) != str(value):
                return False
    return True


def draw(percent: float, rng: random.Random) -> bool:
    """Fire with ``percent`` probability, drawn like Envoy's fault filter (parts per million)."""
    numerator = int(percent * _PER_MILLION)
    if numerator >= 100 * _PER_MILLION:
        return True
    return numerator > 0 and int(rng.random() * 1_000_000) < numerator


class Fault:
    """A declared fault. ``seen``: requests/attempts it matched; ``injected``: those it acted on."""

    kind = "fault"

    def __init__(self, host: str, *, subset: str | None, percent: float, optional: bool,
                 remove: Callable[[Fault], None]) -> None:
        if not 0 <= percent <= 100:
            raise ValueError(f"mesh fault percent must be within 0..100, got {percent}")
        self.host = host
        self.subset = subset
        self.percent = percent
        self.optional = optional
        self.seen = 0
        self.injected = 0
        self._remove = remove

    def applies_to(self, cluster: Cluster) -> bool:
        return host_matches(self.host, cluster) and (self.subset is None or cluster.subset == self.subset)

    def remove(self) -> None:
        """Stop injecting (idempotent). Counts stay readable."""
        self._remove(self)

    def __enter__(self) -> Fault:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.remove()

    def describe(self) -> str:
        subset = f" subset={self.subset}" if self.subset else ""
        return f"{self.kind}({self.host}{subset}, percent={self.percent:g})"

    def __repr__(self) -> str:
        return f"<{self.describe()} seen={self.seen} injected={self.injected}>"


class RouteFault(Fault):
    """Istio's VirtualService fault: before routing, never retried; an abort is flagged ``FI``."""

    def __init__(self, host: str, *, delay_s: float | None = None, http_status: int | None = None,
                 grpc_status: int | None = None, percent: float = 100.0, subset: str | None = None,
                 match: Mapping[str, object] | None = None, optional: bool = False,
                 remove: Callable[[Fault], None]) -> None:
        super().__init__(host, subset=subset, percent=percent, optional=optional, remove=remove)
        if delay_s is not None and not delay_s >= 0:
            raise ValueError(f"mesh fault delay must be ≥ 0 seconds, got {delay_s}")
        if http_status is not None and not 200 <= http_status <= 599:
            raise ValueError(f"mesh fault abort http_status must be 200..599, got {http_status}")
        if grpc_status is not None and not 0 <= grpc_status <= 16:
            raise ValueError(f"mesh fault abort grpc_status must be 0..16, got {grpc_status}")
        self.kind = "delay" if delay_s is not None else "abort"
        self.delay_s = delay_s
        self.http_status = http_status
        self.grpc_status = grpc_status
        self.match = check_match(match)


class UpstreamFault(Fault):
    """A broken host, per attempt: pick the failure with one of the methods (each returns the fault).

    >>> from meshlib.testing.faults import MeshFaults
    >>> faults = MeshFaults(seed=1)
    >>> faults.upstream("ratings").status(503, times=2).injected
    0
    >>> faults.close(check_unused=False)
    """

    kind = "upstream"

    def __init__(self, host: str, *, subset: str | None = None, endpoint: str | None = None,
                 cluster: str | None = None, percent: float = 100.0, optional: bool = False,
                 remove: Callable[[Fault], None]) -> None:
        super().__init__(host, subset=subset, percent=percent, optional=optional, remove=remove)
        self.endpoint = endpoint
        self.cluster = cluster
        self.action: str | None = None
        self.status_code = 503
        self.grpc_status: int | None = None
        self.seconds = 0.0
        self.latency_s = 0.0
        self.jitter_s = 0.0
        self.times: int | None = None

    def applies_to_attempt(self, cluster: Cluster, endpoint_key: str) -> bool:
        return (
            (self.cluster is None or cluster.name == self.cluster)
            and (self.endpoint is None or endpoint_key == self.endpoint)
            and self.applies_to(cluster)
        )

    def _act(self, action: str, times: int | None = None) -> UpstreamFault:
        if self.action is not None:
            raise ValueError(f"{self.describe()} already {self.action}s; declare another upstream fault for {action}")
        if times is not None and times < 1:
            raise ValueError(f"mesh fault times must be ≥ 1, got {times}")
        self.action = action
        self.times = times
        return self

    def refuse(self, *, times: int | None = None) -> UpstreamFault:
        """Connections are refused (Envoy ``UF``; retried on ``connect-failure``)."""
        return self._act("refuse", times)

    def reset(self, *, times: int | None = None) -> UpstreamFault:
        """The connection is reset after the request was sent (``UC``; retried on ``reset``)."""
        return self._act("reset", times)

    def blackhole(self, *, times: int | None = None) -> UpstreamFault:
        """The host accepts and never answers: the per-try or route timeout decides (``UT``)."""
        return self._act("blackhole", times)

    def malformed(self, *, times: int | None = None) -> UpstreamFault:
        """The host answers bytes that are not HTTP (``UPE``; retried as a reset)."""
        return self._act("malformed", times)

    def status(self, status: int = 503, *, grpc_status: int | str | None = None,
               times: int | None = None) -> UpstreamFault:
        """The host answers ``status`` (gRPC: ``grpc_status``, default the status Envoy maps ``status`` to)."""
        if not 200 <= status <= 599:
            raise ValueError(f"mesh fault status must be 200..599, got {status}")
        self.status_code = status
        self.grpc_status = grpc_code(grpc_status)
        return self._act("status", times)

    def stall_body(self, *, times: int | None = None) -> UpstreamFault:
        """Headers arrive, then the body stalls (gRPC: initial metadata, then nothing)."""
        return self._act("stall_body", times)

    def slow_body(self, seconds: float, *, times: int | None = None) -> UpstreamFault:
        """A 200 whose 1 KiB body trickles in over ``seconds``."""
        self.seconds = seconds
        return self._act("slow_body", times)

    def latency(self, seconds: float, *, jitter: float = 0.0) -> UpstreamFault:
        """Each affected attempt waits ``seconds`` ± ``jitter`` before being sent (inside the per-try timeout);
        combines with one of the failures above."""
        if seconds < 0 or jitter < 0 or jitter > seconds:
            raise ValueError(f"mesh fault latency needs 0 ≤ jitter ≤ seconds, got {seconds}, {jitter}")
        self.latency_s = seconds
        self.jitter_s = jitter
        return self

    def armed(self) -> bool:
        return self.times is None or self.injected < self.times

    def describe(self) -> str:
        where = "".join(f" {k}={v}" for k, v in
                        (("subset", self.subset), ("endpoint", self.endpoint), ("cluster", self.cluster)) if v)
        what = self.action or "pass"
        if self.action == "status":
            what = f"status {self.status_code}"
        if self.latency_s:
            what += f" +latency {self.latency_s:g}s"
        return f"upstream({self.host}{where}): {what}"


@dataclass
class Attempt:
    """One attempt (or a route-level abort, ``number`` 0) seen while the controller was active."""

    number: int  # 1 = first try, 2 = first retry …; 0 = answered by a route-level fault, nothing sent
    host: str | None  # ip:port the balancer picked (a fault may have sent it elsewhere)
    cluster: str
    status: int = 0  # HTTP status of the answer; 0 = none (a local failure)
    grpc_status: int | None = None
    flag: str = "-"  # Envoy response flag: UF, UC, UT, UPE, FI, …; "-" for an upstream answer
    retried: bool = False  # a further attempt followed this one
    fault: str | None = None  # the fault that acted on it
