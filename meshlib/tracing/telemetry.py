"""The mesh's telemetry switchboard: tracing and the sinks that receive request records.

``mesh._telemetry`` is ``None`` until tracing or a sink is enabled, so the
request path's only cost with telemetry off is reading that attribute. The
completion work (span ends, records) goes through ``deferred``, one queue per
mesh that survives enabling more telemetry later.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshlib.tracing.deferred import DeferredTelemetry
from meshlib.tracing.record import TelemetrySink
from meshlib.tracing.spans import Tracing


@dataclass(frozen=True, slots=True)
class Telemetry:
    tracing: Tracing | None = None
    sinks: tuple[TelemetrySink, ...] = ()
    deferred: DeferredTelemetry = field(default_factory=DeferredTelemetry)

    @property
    def active(self) -> bool:
        return self.tracing is not None or bool(self.sinks)
