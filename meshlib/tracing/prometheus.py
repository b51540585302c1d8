"""Prometheus text exposition (format 0.0.4) of Istio's metrics and the mesh's Envoy-named stats.

Rendered by hand from :meth:`IstioMetrics.snapshot` and ``mesh.stats()``, so
no ``prometheus_client`` (nor the OpenTelemetry SDK) is needed.

- Istio metrics keep Istio's names: ``istio_requests_total``,
  ``istio_request_duration_milliseconds_bucket{...,le="0.5"}`` …
- ``mesh.stats()["clusters"]`` become Envoy's Prometheus names as Istio's
  proxies expose them: ``cluster.<name>.<stat>`` → ``envoy_cluster_<stat>``
  with ``.`` → ``_`` and the cluster as the ``cluster_name`` label, e.g.
  ``envoy_cluster_upstream_rq_retry{cluster_name="outbound|9080||reviews.default.svc.cluster.local"} 2``.
  Envoy's ``circuit_breakers.default.*`` gauges keep that prefix
  (``envoy_cluster_circuit_breakers_default_rq_open``).
- meshlib-only state gets a ``meshlib_`` prefix: ``meshlib_cluster_ejected_hosts``,
  ``meshlib_cluster_retry_budget_balance``, ``meshlib_host_active_requests{host="ip:port"}``,
  ``meshlib_host_ejected``, ``meshlib_breaker_state{breaker=...,state=...}``.

Example::

    app.router.add_get("/stats/prometheus",
                       prometheus_handler(lambda: render_prometheus(metrics, mesh.stats())))
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web

from meshlib.tracing.metrics import (
    HELP,
    REQUEST_BYTES,
    REQUEST_DURATION,
    REQUESTS_TOTAL,
    RESPONSE_BYTES,
    HistogramSnapshot,
    IstioMetrics,
)

__all__ = ["CONTENT_TYPE", "escape_label_value", "prometheus_handler", "render_prometheus"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# Envoy's circuit-breaker gauges live under ``circuit_breakers.default.``; limits.stats() reports them bare.
_CIRCUIT_BREAKER_STATS: Final = frozenset({
    "rq_open", "rq_pending_open", "rq_retry_open", "cx_open",
    "remaining_rq", "remaining_pending", "remaining_retries", "remaining_cx",
})
_BREAKER_STATES: Final = ("closed", "open", "half-open")


def escape_label_value(value: str) -> str:
    r"""Escape a label value per the text format: ``\`` → ``\\``, ``"`` → ``\"``, newline → ``\n``.

    >>> escape_label_value('a"b\\c\nd')
    'a\\"b\\\\c\\nd'
    """
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value or ``le`` bound as Prometheus (and Envoy) print it: ``3``, ``0.5``, ``+Inf``, ``NaN``."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _labels(pairs: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    return ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs)


class _Families:
    """Samples grouped by metric family (the format requires one block per family)."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, list[str]]] = {}

    def add(self, family: str, kind: str, help_text: str, line: str) -> None:
        entry = self._families.get(family)
        if entry is None:
            entry = self._families[family] = (kind, help_text, [])
        entry[2].append(line)

    def render(self, out: list[str]) -> None:
        for family, (kind, help_text, lines) in self._families.items():
            out.append(f"# HELP {family} {_escape_help(help_text)}")
            out.append(f"# TYPE {family} {kind}")
            out.extend(lines)


def _histogram_lines(name: str, labels: str, h: HistogramSnapshot) -> list[str]:
    sep = "," if labels else ""
    lines = [
        f'{name}_bucket{{{labels}{sep}le="{format_value(bound)}"}} {n}'
        for bound, n in zip(h.bounds, h.buckets, strict=True)
    ]
    lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {h.count}')
    lines.append(f"{name}_sum{{{labels}}} {format_value(h.sum)}")
    lines.append(f"{name}_count{{{labels}}} {h.count}")
    return lines


def _render_istio(metrics: IstioMetrics, out: list[str]) -> None:
    snapshot = metrics.snapshot()
    if not snapshot:
        return
    rendered = [(_labels(s.labels), s) for s in snapshot]
    out.append(f"# HELP {REQUESTS_TOTAL} {HELP[REQUESTS_TOTAL]}")
    out.append(f"# TYPE {REQUESTS_TOTAL} counter")
    out.extend(f"{REQUESTS_TOTAL}{{{labels}}} {s.requests}" for labels, s in rendered)
    for name, index in ((REQUEST_DURATION, 0), (REQUEST_BYTES, 1), (RESPONSE_BYTES, 2)):
        out.append(f"# HELP {name} {HELP[name]}")
        out.append(f"# TYPE {name} histogram")
        for labels, s in rendered:
            out.extend(_histogram_lines(name, labels, (s.duration_ms, s.request_bytes, s.response_bytes)[index]))


def stat_number(value: Any) -> float | None:
    """A stat's value as a number (a bool as 0/1), or None when it is not one."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    return None


def _cluster_stat_family(stat: str) -> tuple[str, str]:
    """Envoy's Prometheus family name and type for one ``clusters[name]`` key."""
    if stat in _CIRCUIT_BREAKER_STATS:
        return "envoy_cluster_circuit_breakers_default_" + stat, "gauge"
    if stat == "retry_budget_balance":
        return "meshlib_cluster_retry_budget_balance", "gauge"
    kind = "gauge" if stat.endswith("_active") else "counter"
    return "envoy_cluster_" + stat.replace(".", "_").replace("-", "_"), kind


def _render_mesh_stats(stats: Mapping[str, Any], out: list[str]) -> None:
    fam = _Families()
    _render_inbound_rbac(stats.get("inbound") or {}, fam)
    clusters: Mapping[str, Mapping[str, Any]] = stats.get("clusters") or {}
    for cluster in sorted(clusters):
        label = f'cluster_name="{escape_label_value(cluster)}"'
        values = clusters[cluster]
        for stat in sorted(values):
            value = values[stat]
            if stat == "ejected_hosts" and isinstance(value, Mapping):
                fam.add("meshlib_cluster_ejected_hosts", "gauge", "Hosts of the cluster currently ejected.",
                        f"meshlib_cluster_ejected_hosts{{{label}}} {len(value)}")
                continue
            number = stat_number(value)
            if number is None:
                continue
            family, kind = _cluster_stat_family(stat)
            fam.add(family, kind, f"Envoy cluster stat {stat}.", f"{family}{{{label}}} {format_value(number)}")
    hosts: Mapping[str, Mapping[str, Any]] = stats.get("hosts") or {}
    for host in sorted(hosts):
        label = f'host="{escape_label_value(host)}"'
        h = hosts[host]
        for key, family, kind, help_text in (
            ("active_requests", "meshlib_host_active_requests", "gauge", "Requests in flight to the host."),
            ("ejected", "meshlib_host_ejected", "gauge", "1 while outlier detection ejects the host."),
            ("ejection_count", "meshlib_host_ejections_total", "counter", "Times the host was ejected."),
            ("ewma_cost_s", "meshlib_host_ewma_cost_seconds", "gauge", "Moving average of request cost."),
        ):
            number = stat_number(h.get(key))
            if number is not None:
                fam.add(family, kind, help_text, f"{family}{{{label}}} {format_value(number)}")
    breakers: Mapping[str, Mapping[str, Any]] = stats.get("breakers") or {}
    for name in sorted(breakers):
        b = breakers[name]
        label = f'breaker="{escape_label_value(name)}"'
        state = str(b.get("state", ""))
        for candidate in _BREAKER_STATES:
            fam.add("meshlib_breaker_state", "gauge", "1 for the breaker's current state.",
                    f'meshlib_breaker_state{{{label},state="{candidate}"}} {int(state == candidate)}')
        for key in ("calls", "successes", "failures_total", "rejections", "excluded", "cancellations"):
            number = stat_number(b.get(key))
            if number is not None:
                family = "meshlib_breaker_" + (key if key.endswith("_total") else key + "_total")
                fam.add(family, "counter", f"Circuit breaker {key}.", f"{family}{{{label}}} {format_value(number)}")
    fam.render(out)


def _render_inbound_rbac(inbound: Mapping[str, Any], fam: _Families) -> None:
    # Envoy's RBAC filter stats, named as Envoy exports them, once any request was checked (no policy,
    # no filter, no series); denials per policy are labelled by configured policy names only (bounded).
    counts = {stat: stat_number(inbound.get(stat)) for stat in ("rbac.allowed", "rbac.denied", "rbac.logged")}
    if not any(counts.values()):
        return
    for stat, number in counts.items():
        if number is not None:
            family = "envoy_http_" + stat.replace(".", "_")
            fam.add(family, "counter", f"Envoy RBAC filter stat {stat}.",
                    f'{family}{{envoy_http_conn_manager_prefix="inbound"}} {format_value(number)}')
    denied: Mapping[str, Any] = inbound.get("denied_by_policy") or {}
    for policy in sorted(denied):
        number = stat_number(denied[policy])
        if number is not None:
            fam.add("meshlib_inbound_rbac_denied_by_policy", "counter",
                    "Inbound requests denied, by the AuthorizationPolicy that denied them.",
                    f'meshlib_inbound_rbac_denied_by_policy{{policy="{escape_label_value(policy)}"}} '
                    f"{format_value(number)}")


def render_prometheus(metrics: IstioMetrics | None, mesh_stats: Mapping[str, Any] | None = None) -> str:
    """The Prometheus text exposition of ``metrics`` and ``mesh_stats`` (what ``mesh.stats()`` returns).

    >>> render_prometheus(None, {"clusters": {"outbound|9080||r": {"upstream_rq_retry": 2}}}).splitlines()[-1]
    'envoy_cluster_upstream_rq_retry{cluster_name="outbound|9080||r"} 2'
    """
    out: list[str] = []
    if metrics is not None:
        _render_istio(metrics, out)
    if mesh_stats:
        _render_mesh_stats(mesh_stats, out)
    return "\n".join(out) + "\n" if out else ""


def prometheus_handler(get_text: Callable[[], str]) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler serving ``get_text()`` as a Prometheus scrape (``text/plain; version=0.0.4``).

    Example::

        app.router.add_get("/stats/prometheus",
                           prometheus_handler(lambda: render_prometheus(metrics, mesh.stats())))
    """

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=get_text().encode(), headers={"Content-Type": CONTENT_TYPE})

    return handler
