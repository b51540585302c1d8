"""``meshlib admin --attach URL``: read a running admin endpoint (e.g. ``meshlib demo --serve``) from a terminal.

Prints what the process serving ``URL`` reports: ``/server_info`` (version,
state, config), its clusters with each host's health and load, and its
``/stats`` (``--filter REGEX`` keeps matching names, as ``/stats?filter=``).
Plain HTTP with the standard library: no extra needed.

Example::

    $ meshlib admin --attach http://127.0.0.1:15000 --filter 'ratings.*upstream_rq_(total|retry)$'
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import IO, Any

__all__ = ["attach"]


def _get(base: str, path: str, timeout_s: float) -> bytes:
    with urllib.request.urlopen(base + path, timeout=timeout_s) as response:
        body: bytes = response.read()
        return body


def _clusters_table(view: dict[str, Any]) -> list[str]:
    lines = []
    for cluster in view.get("clusters", []):
        stats = cluster.get("stats", {})
        lines.append(f"  {cluster['name']}  ({cluster.get('lb', '')})  requests {stats.get('upstream_rq_total', 0)}"
                     f", 5xx {stats.get('upstream_rq_5xx', 0)}, retries {stats.get('upstream_rq_retry', 0)}")
        for host in cluster.get("hosts", []):
            health = "healthy" if host.get("healthy") else "/".join(host.get("health_flags", []))
            lines.append(f"      {host['address']:<22} {health:<22} active {host.get('rq_active', 0)}")
    return lines


def attach(url: str, *, stats_filter: str | None = None, timeout_s: float = 5.0, out: IO[str] | None = None) -> int:
    """Print a running admin endpoint's state; 0 on success, 1 (one line on stderr) when unreachable."""
    out = out if out is not None else sys.stdout
    base = (url if "://" in url else f"http://{url}").rstrip("/")
    query = "?" + urllib.parse.urlencode({"filter": stats_filter}) if stats_filter else ""
    try:
        info = json.loads(_get(base, "/server_info", timeout_s))
        clusters = json.loads(_get(base, "/clusters", timeout_s))
        stats = _get(base, "/stats" + query, timeout_s).decode()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        print(f"meshlib admin: {base}: HTTP {exc.code}: {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"meshlib admin: cannot read {base}: {reason}", file=sys.stderr)
        return 1
    config = info.get("config", {})
    print(f"{base}: {info.get('version', '?')}, {info.get('state', '?')}, up {info.get('uptime_current_epoch', '?')}"
          f", config {config.get('source', '?')} version {config.get('version', '?')}", file=out)
    print("clusters:", file=out)
    for line in _clusters_table(clusters):
        print(line, file=out)
    print(f"stats{' matching ' + repr(stats_filter) if stats_filter else ''}:", file=out)
    out.write(stats)
    return 0
