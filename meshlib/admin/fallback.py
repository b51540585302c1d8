"""The admin page's server-rendered part: readable without JavaScript (curl, w3m, a locked-down browser).

:func:`render_fallback` turns the same views the JSON endpoints serve
(:func:`~meshlib.admin.config_dump.clusters_view`, ``routes_view``, ``status``)
into plain HTML tables. The page inserts them inside ``<noscript>`` at its
``<!--meshlib:server-rendered-->`` marker, so a browser running the page's
script shows only the live view and anything else shows these tables.
Every value is HTML-escaped: cluster names and matches come from configuration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any, Final

__all__ = ["FALLBACK_MARKER", "render_fallback"]

FALLBACK_MARKER: Final = "<!--meshlib:server-rendered-->"


def _table(caption: str, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<section><h2>{escape(caption)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" \
           "</section>"


def _status_rows(status: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [(key, ", ".join(map(str, value)) if isinstance(value, list) else str(value))
            for key, value in status.items() if key != "last_error"]
    errors = status.get("last_error") or []
    rows.append(("last rejected edit", "; ".join(map(str, errors)) if errors else "none"))
    return rows


def _cluster_rows(clusters: Mapping[str, Any]) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for cluster in clusters["clusters"]:
        stats = cluster["stats"]
        rows.append((cluster["name"], cluster["lb"], "", stats.get("upstream_rq_total", 0),
                     stats.get("upstream_rq_5xx", 0), stats.get("upstream_rq_retry", 0)))
        for host in cluster["hosts"]:
            health = "healthy" if host["healthy"] else "ejected (" + ",".join(host["health_flags"]) + ")"
            rows.append((f"  {host['address']}", health, host["rq_active"], "", "", ""))
    return rows


def _route_rows(routes: Mapping[str, Any]) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for config in routes["route_configs"]:
        for vhost in config["virtual_hosts"]:
            for route in vhost["routes"]:
                rule = f"{route['virtual_service'] or '(default)'} / {route['rule'] or route['index']}"
                destinations = ", ".join(
                    f"{d['host']}{'/' + d['subset'] if d['subset'] else ''} {d['percent']:g}%"
                    for d in route["destinations"]
                ) or route["action"]
                timeout = "none" if route["timeout_s"] is None else f"{route['timeout_s']:g}s"
                retries = route["retries"]
                retry_text = f"{retries['attempts']} × {retries['retry_on']}" if retries else "none"
                rows.append((vhost["name"], rule, " | ".join(route["match"]), destinations, timeout, retry_text,
                             "yes" if route["fault"] else ""))
    return rows


def render_fallback(status: Mapping[str, Any], clusters: Mapping[str, Any], routes: Mapping[str, Any]) -> str:
    """The ``<noscript>`` block: configuration status, clusters with hosts, and routes as HTML tables.

    >>> html = render_fallback({"version": "v1"}, {"clusters": []}, {"route_configs": []})
    >>> html.startswith("<noscript>") and "<td>version</td><td>v1</td>" in html
    True
    """
    parts = [
        "<noscript>",
        "<p>Without JavaScript this page shows the state when it was served; reload for fresh values, or read "
        "the JSON endpoints linked above.</p>",
        _table("Configuration", ("field", "value"), _status_rows(status)),
        _table("Clusters", ("cluster / host", "LB / health", "active requests", "requests", "5xx", "retries"),
               _cluster_rows(clusters)),
        _table("Routes", ("virtual host", "VirtualService / rule", "match", "destinations", "timeout", "retries",
                          "fault"), _route_rows(routes)),
        "</noscript>",
    ]
    return "".join(parts)
