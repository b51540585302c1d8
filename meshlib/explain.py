"""``mesh.explain`` / ``meshlib explain``: the routing decision as JSON, nothing sent.

The keys are a stable, documented contract (architecture.md): ``status``,
``route``, ``destinations``, ``timeout_s``, ``retries``, ``fault``,
``mirror``, ``rewrite``, ``endpoints``, ``lb``. meshlib adds ``action``
(``route`` / ``passthrough`` / ``local_reply``) and ``authority``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from multidict import CIMultiDict
from yarl import URL

from meshlib.config.model import Route
from meshlib.decision import Action, decide
from meshlib.mesh_state import MeshState
from meshlib.request import RequestView
from meshlib.routing import destination_percents

_DEFAULT_PORTS = {"http": 80, "https": 443}


def explain(
    state: MeshState, method: str, url: str, headers: Mapping[str, str], rng: random.Random
) -> dict[str, Any]:
    parsed = URL(url)
    if not parsed.absolute or parsed.host is None:
        raise ValueError(f"explain needs an absolute URL such as http://reviews:9080/, not {url!r}")
    request_headers: CIMultiDict[str] = CIMultiDict(headers)
    authority = request_headers.get("host") or parsed.raw_authority
    port = parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 80)
    view = RequestView(
        method.upper(), authority, parsed.raw_path, parsed.scheme, request_headers, parsed.query
    )
    # Explaining must not consume the caller's random stream.
    decision = decide(state, view, port, random.Random(0))
    route = decision.route
    result: dict[str, Any] = {
        "status": 200,
        "action": decision.action.value,
        "authority": authority,
        "route": None,
        "destinations": [],
        "timeout_s": None,
        "retries": None,
        "fault": None,
        "mirror": None,
        "rewrite": None,
        "endpoints": {},
        "lb": None,
    }
    if decision.action is Action.LOCAL_REPLY:
        result["status"] = decision.status
        result["reason"] = decision.body.decode(errors="replace").strip() or None
        if decision.location:
            result["location"] = decision.location
    if route is None:
        return result
    result["route"] = {
        "virtual_service": route.source.virtual_service,
        "rule": route.source.rule_name or None,
        "index": route.source.rule_index,
    }
    _describe_policies(route, result)
    destinations = []
    for dest, percent in destination_percents(route):
        destinations.append(
            {"cluster": dest.cluster, "host": dest.host, "port": dest.port, "subset": dest.subset or None,
             "weight": round(percent, 3)}
        )
        cluster = state.snapshot.clusters.get(dest.cluster)
        if cluster is not None:
            result["endpoints"][dest.cluster] = [f"{e.address}:{e.port}" for e in cluster.endpoints]
            if result["lb"] is None:
                result["lb"] = state.balancers[cluster.name].describe()
    result["destinations"] = destinations
    return result


def _describe_policies(route: Route, result: dict[str, Any]) -> None:
    result["timeout_s"] = route.timeout_s
    if route.retry is not None:
        retry_on = list(route.retry.retry_on)
        retry_on += [str(code) for code in route.retry.retriable_status_codes]
        result["retries"] = {
            "attempts": route.retry.num_retries,
            "per_try_timeout_s": route.retry.per_try_timeout_s,
            "retry_on": ",".join(retry_on),
        }
    else:
        result["retries"] = {"attempts": 0, "per_try_timeout_s": None, "retry_on": ""}
    if route.fault is not None:
        f = route.fault
        result["fault"] = {
            "delay_s": f.delay_s, "delay_percent": f.delay_percent,
            "abort_http_status": f.abort_http_status, "abort_grpc_status": f.abort_grpc_status,
            "abort_percent": f.abort_percent,
        }
    if route.mirrors:
        result["mirror"] = [
            {"cluster": m.cluster, "host": m.host, "port": m.port, "subset": m.subset or None, "percent": m.percent}
            for m in route.mirrors
        ]
    if route.rewrite is not None:
        rw = route.rewrite
        result["rewrite"] = {
            "uri": rw.uri, "authority": rw.authority,
            "uri_regex": list(rw.uri_regex) if rw.uri_regex else None,
        }
