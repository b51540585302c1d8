"""Small builders for routing tests: model objects without the noise."""

from __future__ import annotations

from collections.abc import Mapping

from meshlib.config.model import (
    MeshSnapshot,
    Route,
    RouteConfiguration,
    RouteMatch,
    RouteSource,
    StringMatch,
    VirtualHost,
    WeightedCluster,
)
from meshlib.request import RequestView

FQDN = "reviews.default.svc.cluster.local"


def exact(value: str, ignore_case: bool = False) -> StringMatch:
    return StringMatch("exact", value, ignore_case)


def prefix(value: str, ignore_case: bool = False) -> StringMatch:
    return StringMatch("prefix", value, ignore_case)


def regex(value: str, ignore_case: bool = False) -> StringMatch:
    return StringMatch("regex", value, ignore_case)


PRESENT = StringMatch("present")


def dest(subset: str = "", weight: int = 100, port: int = 9080, host: str = FQDN) -> WeightedCluster:
    return WeightedCluster(f"outbound|{port}|{subset}|{host}", host, port, subset, weight)


def route(name: str, *matches: RouteMatch, destinations: tuple[WeightedCluster, ...] | None = None) -> Route:
    return Route(
        matches=tuple(matches),
        source=RouteSource("default/reviews", name, 0),
        destinations=destinations if destinations is not None else (dest(name),),
    )


def request(
    path: str = "/",
    *,
    method: str = "GET",
    authority: str = "reviews:9080",
    scheme: str = "http",
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
) -> RequestView:
    return RequestView(method, authority, path, scheme, dict(headers or {}), dict(query or {}))


def reviews_domains(port: int = 9080) -> tuple[str, ...]:
    names = ("reviews", "reviews.default", "reviews.default.svc", FQDN)
    return tuple(d for n in names for d in (n, f"{n}:{port}"))


def snapshot(
    routes: tuple[Route, ...] = (),
    *,
    port: int = 9080,
    vhosts: tuple[VirtualHost, ...] | None = None,
) -> MeshSnapshot:
    if vhosts is None:
        vhosts = (VirtualHost(f"{FQDN}:{port}", reviews_domains(port), routes),)
    rc = RouteConfiguration(str(port), vhosts)
    return MeshSnapshot("test", route_configs={str(port): rc})
