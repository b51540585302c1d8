"""``/stats`` as Envoy's admin serves it: ``name: value`` text, ``?format=json``, ``?format=prometheus``.

Stat names follow Envoy's dotted form:

- ``cluster.<cluster>.<stat>`` for every numeric ``mesh.stats()["clusters"]`` value
  (``cluster.outbound|9080|v1|reviews.default.svc.cluster.local.upstream_rq_retry: 2``),
  with the circuit-breaker gauges under ``circuit_breakers.default.`` as in Envoy
  and ``outlier_detection.ejections_active`` for the ejected-host count;
- ``meshlib.breaker.<name>.<stat>`` for :meth:`Mesh.breaker` breakers;
- Istio's request metrics, when enabled, keep their Prometheus names and labels:
  ``istio_requests_total{reporter="source",...}: 3``; histograms are shown as
  ``count=N sum=S`` (``?format=prometheus`` has their buckets).

``?filter=REGEX`` keeps the stats whose name matches (searched, RE2 syntax, so
it is linear-time whatever a caller sends); ``?usedonly`` drops zero values.
Both apply to the Prometheus form too (by metric family name), as in Envoy.

Example::

    >>> lines = stats_lines({"clusters": {"c": {"upstream_rq_retry": 2, "rq_open": 0}}}, None)
    >>> render_text(lines)
    'cluster.c.circuit_breakers.default.rq_open: 0\\ncluster.c.upstream_rq_retry: 2\\n'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import re2

from meshlib.tracing.metrics import REQUEST_BYTES, REQUEST_DURATION, REQUESTS_TOTAL, RESPONSE_BYTES, IstioMetrics
from meshlib.tracing.prometheus import escape_label_value, format_value, stat_number

__all__ = [
    "MAX_FILTER_LENGTH",
    "StatFilter",
    "StatLine",
    "compile_filter",
    "filter_prometheus",
    "render_json",
    "render_text",
    "stats_lines",
]

#: Longest ``?filter=`` accepted (RE2 bounds the time; this bounds the compiled program).
MAX_FILTER_LENGTH: Final = 1024

_CIRCUIT_BREAKER_STATS: Final = frozenset({
    "rq_open", "rq_pending_open", "rq_retry_open", "cx_open",
    "remaining_rq", "remaining_pending", "remaining_retries", "remaining_cx",
})


@dataclass(frozen=True, slots=True)
class StatLine:
    """One stat: its Envoy-style name and value (``histogram`` holds ``(count, sum)`` for histograms)."""

    name: str
    value: float
    histogram: tuple[int, float] | None = None


StatFilter = Callable[[str], bool]


class FilterError(ValueError):
    """A ``?filter=`` that is not a valid RE2 pattern (or too long); the message says why."""


def compile_filter(pattern: str | None) -> StatFilter | None:
    """The name predicate for ``?filter=``; ``None`` for no filter. Raises :class:`FilterError`."""
    if not pattern:
        return None
    if len(pattern) > MAX_FILTER_LENGTH:
        raise FilterError(f"filter is {len(pattern)} characters long; at most {MAX_FILTER_LENGTH}")
    try:
        regex = re2.compile(pattern)
    except re2.error as exc:
        raise FilterError(f"filter {pattern!r} is not a valid regular expression (RE2 syntax): {exc}") from None
    return lambda name: regex.search(name) is not None


def _cluster_stat_name(cluster: str, stat: str) -> str:
    if stat in _CIRCUIT_BREAKER_STATS:
        return f"cluster.{cluster}.circuit_breakers.default.{stat}"
    return f"cluster.{cluster}.{stat}"


def _istio_lines(metrics: IstioMetrics) -> Iterable[StatLine]:
    for series in metrics.snapshot():
        labels = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in series.labels)
        yield StatLine(f"{REQUESTS_TOTAL}{{{labels}}}", series.requests)
        for family, histogram in ((REQUEST_DURATION, series.duration_ms), (REQUEST_BYTES, series.request_bytes),
                                  (RESPONSE_BYTES, series.response_bytes)):
            yield StatLine(f"{family}{{{labels}}}", histogram.count, (histogram.count, histogram.sum))


def stats_lines(mesh_stats: Mapping[str, Any], metrics: IstioMetrics | None) -> list[StatLine]:
    """Every stat of ``mesh_stats`` (what ``mesh.stats()`` returns) and ``metrics``, sorted by name."""
    lines: list[StatLine] = []
    clusters: Mapping[str, Mapping[str, Any]] = mesh_stats.get("clusters") or {}
    for cluster, values in clusters.items():
        for stat, value in values.items():
            if stat == "ejected_hosts" and isinstance(value, Mapping):
                lines.append(StatLine(f"cluster.{cluster}.outlier_detection.ejections_active", len(value)))
                continue
            number = stat_number(value)
            if number is not None:
                lines.append(StatLine(_cluster_stat_name(cluster, stat), number))
    breakers: Mapping[str, Mapping[str, Any]] = mesh_stats.get("breakers") or {}
    for name, values in breakers.items():
        for stat, value in values.items():
            number = stat_number(value)
            if number is not None:
                lines.append(StatLine(f"meshlib.breaker.{name}.{stat}", number))
    lines.sort(key=lambda line: line.name)
    if metrics is not None:
        lines.extend(_istio_lines(metrics))  # already in a stable order (outbound, then inbound)
    return lines


def _selected(lines: Iterable[StatLine], keep: StatFilter | None, used_only: bool) -> list[StatLine]:
    return [
        line for line in lines
        if (keep is None or keep(line.name)) and not (used_only and line.value == 0)
    ]


def render_text(lines: Iterable[StatLine], keep: StatFilter | None = None, *, used_only: bool = False) -> str:
    """Envoy's plain ``/stats`` form: one ``name: value`` line per stat."""
    out = []
    for line in _selected(lines, keep, used_only):
        if line.histogram is not None:
            count, total = line.histogram
            out.append(f"{line.name}: count={count} sum={format_value(total)}")
        else:
            out.append(f"{line.name}: {format_value(line.value)}")
    return "\n".join(out) + "\n" if out else ""


def render_json(
    lines: Iterable[StatLine], keep: StatFilter | None = None, *, used_only: bool = False
) -> dict[str, Any]:
    """Envoy's ``/stats?format=json`` shape: ``{"stats": [{"name": ..., "value": ...}, ...]}``.

    Histograms are entries ``{"name": ..., "histogram": {"count": N, "sum": S}}``
    (Envoy reports computed quantiles instead; meshlib keeps Istio's buckets,
    which ``?format=prometheus`` shows).
    """
    stats: list[dict[str, Any]] = []
    for line in _selected(lines, keep, used_only):
        if line.histogram is not None:
            stats.append({"name": line.name, "histogram": {"count": line.histogram[0], "sum": line.histogram[1]}})
        else:
            stats.append({"name": line.name, "value": line.value})
    return {"stats": stats}


def filter_prometheus(text: str, keep: StatFilter | None, *, used_only: bool = False) -> str:
    """Keep the metric families of a Prometheus exposition whose name ``keep`` accepts (and non-zero samples)."""
    if keep is None and not used_only:
        return text
    out: list[str] = []
    family_kept = True
    for line in text.splitlines():
        if line.startswith("# HELP "):
            family = line[7:].split(" ", 1)[0]
            family_kept = keep is None or keep(family)
        if not family_kept:
            continue
        if used_only and not line.startswith("#") and line.rsplit(" ", 1)[-1] in ("0", "0.0"):
            continue
        out.append(line)
    return "\n".join(out) + "\n" if out else ""
