"""The demo's scenes, in the order they play (``meshlib demo --scenes`` picks by name)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from meshlib.demo.bookinfo import RATINGS
from meshlib.demo.scenes_resilience import breaker, fault_and_timeout, outlier_detection, retries
from meshlib.demo.scenes_routing import canary, header_routing
from meshlib.demo.scenes_telemetry import metrics, trace
from meshlib.demo.stage import Scene, Stage

__all__ = ["SCENES", "Scene", "Stage"]


def _scene(name: str, title: str, columns: Iterable[str], intro: str,
           run: Callable[[Stage], Awaitable[None]]) -> Scene:
    return Scene(name, title, tuple(columns), intro, run)


SCENES: tuple[Scene, ...] = (
    _scene("canary", "Canary: shifting reviews from v1 to v3", ("weights (VirtualService)", "config version", "v1",
                                                                 "v3"),
           "The reviews VirtualService's weights are edited four times; each edit is hot-reloaded.", canary),
    _scene("headers", "Header routing: jason sees v2", ("request", "rule", "v1", "v2", "v3"),
           "A match on the end-user header sends jason to v2; everyone else to v1.", header_routing),
    _scene("fault", "Fault injection and the timeout that contains it", ("outcome", "meaning", "visits", "slowest"),
           "ratings: 40% delayed 1 s, 30% aborted with 503 (fault). reviews → v2 with a 300 ms route timeout.",
           fault_and_timeout),
    _scene("retries", "Retries absorb a flaky host", ("ratings retry policy", "ok", "failed", "host failures",
                                                      "retries"),
           f"ratings :{RATINGS[1]} fails every other request; first without retries, then with 3 on 5xx.", retries),
    _scene("outlier", "Outlier detection ejects a failing host and brings it back",
           ("phase", f":{RATINGS[0]}", f":{RATINGS[1]}", "errors", "ejected"),
           "ratings DestinationRule: consecutive5xxErrors 3, baseEjectionTime 1s.", outlier_detection),
    _scene("breaker", "Circuit breaking: pool overflow answers 503 UO", ("status", "meaning", "calls"),
           "ratings DestinationRule: 1 connection, 1 pending request; 10 callers at once to a slow ratings.", breaker),
    _scene("trace", "The trace of one request across services", ("",),
           "OpenTelemetry SDK with an in-memory exporter; one visit as jason.", trace),
    _scene("metrics", "The Istio metrics behind it all", ("destination", "version", "code", "flags", "requests"),
           "istio_requests_total as recorded in process for every scene above.", metrics),
)
