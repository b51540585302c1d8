"""Cost of one routing decision (route match + weighted pick) on a 100-route virtual host.

Run: ``python bench/decision_cost_routing.py``. Prints µs per decision for a
request matching the first route, one matching only the last route, and one
matching none, plus the same three through a naive in-order scan of
precompiled per-block predicates (the baseline the path index replaces),
measured in the same run so the ratio is meaningful on any machine.

A second table prints the cost of one regex full match with RE2 (what meshlib
runs) and with Python's backtracking ``re`` (what it ran before), on ordinary
route regexes and on a catastrophic-backtracking pattern.

The table is built directly from model objects: a realistic mix of prefix,
exact, header-guarded, method/query-guarded and regex routes over one host.
"""

from __future__ import annotations

import random
import re
import timeit
from collections.abc import Callable

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
from meshlib.config.regex import full_match_predicate
from meshlib.request import RequestView
from meshlib.routing import RouteTable, compile_match, pick_destination

PORT = 9080
FQDN = "reviews.default.svc.cluster.local"


def _dest(subset: str, weight: int = 100) -> WeightedCluster:
    return WeightedCluster(f"outbound|{PORT}|{subset}|{FQDN}", FQDN, PORT, subset, weight)


def _route(i: int, matches: tuple[RouteMatch, ...]) -> Route:
    split = (_dest("v1", 80), _dest("v2", 15), _dest("v3", 5)) if i % 3 == 0 else (_dest("v1"),)
    return Route(matches=matches, source=RouteSource("default/reviews", f"r{i}", i), destinations=split)


def build_routes(n: int = 100) -> tuple[Route, ...]:
    """``n`` routes: the last one matches only ``/zz-last`` with header ``x-last: yes``."""
    routes: list[Route] = []
    for i in range(n - 1):
        kind = i % 10
        if kind in (0, 1, 2, 3):
            m = RouteMatch(uri=StringMatch("prefix", f"/api/v{i % 4}/svc{i}"))
        elif kind == 4:
            m = RouteMatch(uri=StringMatch("exact", f"/exact/{i}"))
        elif kind == 5:
            m = RouteMatch(
                uri=StringMatch("prefix", f"/api/v{i % 4}/"),
                headers=(("end-user", StringMatch("exact", f"user{i}")),),
            )
        elif kind == 6:
            m = RouteMatch(headers=(("x-canary", StringMatch("regex", f"c{i}-[0-9]+")),))
        elif kind == 7:
            m = RouteMatch(uri=StringMatch("regex", f"/items/{i}/[0-9]+"))
        elif kind == 8:
            m = RouteMatch(uri=StringMatch("regex", f"(/a{i}|/b{i})/.*"))
        else:
            m = RouteMatch(
                uri=StringMatch("prefix", f"/Static{i}", ignore_case=True),
                method=StringMatch("exact", "POST"),
                query_params=(("debug", StringMatch("present")),),
            )
        routes.append(_route(i, (m,)))
    last = RouteMatch(
        uri=StringMatch("prefix", "/zz-last"), headers=(("x-last", StringMatch("exact", "yes")),)
    )
    routes.append(_route(n - 1, (last,)))
    return tuple(routes)


def build_snapshot(routes: tuple[Route, ...]) -> MeshSnapshot:
    domains = ("reviews", f"reviews:{PORT}", "reviews.default", FQDN, f"{FQDN}:{PORT}")
    vh = VirtualHost(f"{FQDN}:{PORT}", domains, routes)
    others = tuple(
        VirtualHost(f"svc{j}:{PORT}", (f"svc{j}", f"svc{j}:{PORT}"), (_route(0, ()),)) for j in range(20)
    )
    rc = RouteConfiguration(str(PORT), (*others, vh))
    return MeshSnapshot("bench", route_configs={str(PORT): rc})


def _naive(routes: tuple[Route, ...]) -> Callable[[RequestView], Route | None]:
    compiled = [(r, [compile_match(m) for m in r.matches]) for r in routes]

    def route(request: RequestView) -> Route | None:
        for r, preds in compiled:
            for p in preds:
                if p(request):
                    return r
        return None

    return route


def _per_call_us(fn: Callable[[], object], number: int) -> float:
    best = min(timeit.repeat(fn, number=number, repeat=31))
    return best / number * 1e6


def main() -> None:
    routes = build_routes()
    table = RouteTable.compile(build_snapshot(routes))
    naive = _naive(routes)
    rng = random.Random(1)
    requests = {
        "first-route hit": RequestView(
            "GET", "reviews:9080", "/api/v0/svc0/items", headers={"end-user": "x"}
        ),
        "last-route hit": RequestView("GET", "reviews:9080", "/zz-last/1", headers={"x-last": "yes"}),
        "miss": RequestView("GET", "reviews:9080", "/api/v1/nothing/here", headers={"end-user": "nobody"}),
    }
    assert table.route(requests["first-route hit"], PORT).route is routes[0]  # type: ignore[union-attr]
    assert table.route(requests["last-route hit"], PORT).route is routes[-1]  # type: ignore[union-attr]
    assert table.route(requests["miss"], PORT) is None
    number = 10_000
    print(f"routing decision on a {len(routes)}-route virtual host (route + weighted pick), µs per decision")
    print(f"{'case':<18}{'indexed':>10}{'naive scan':>12}{'ratio':>8}")
    for name, req in requests.items():

        def decide(req: RequestView = req) -> object:
            hit = table.route(req, PORT)
            return pick_destination(hit.route, rng) if hit is not None else None

        def baseline(req: RequestView = req) -> object:
            route = naive(req)
            return pick_destination(route, rng) if route is not None else None

        fast = _per_call_us(decide, number)
        slow = _per_call_us(baseline, number // 5)
        print(f"{name:<18}{fast:>10.2f}{slow:>12.2f}{slow / fast:>7.1f}x")
    regex_costs()


def regex_costs() -> None:
    """One full match, RE2 (meshlib) vs Python ``re`` (before), µs per match."""
    cases = [
        ("/items/[0-9]+/[a-z-]+", "/items/12345/some-item"),
        ("(/a1|/b1)/.*", "/b1/" + "x" * 100),
        ("c6-[0-9]+", "c6-" + "9" * 20),
        ("^(a+)+$ (18 chars)", "a" * 18 + "!"),
    ]
    print()
    print("one regex full match, µs")
    print(f"{'pattern':<26}{'RE2':>10}{'python re':>12}")
    for label, text in cases:
        pattern = label.split(" (")[0]
        re2_match = full_match_predicate(pattern)
        py_match = re.compile(pattern).fullmatch
        number = 200 if "+)+" in pattern else 20_000
        slow_number = max(1, number // 100) if "+)+" in pattern else number
        fast = _per_call_us(lambda m=re2_match, t=text: m(t), number)  # type: ignore[misc]
        slow = _per_call_us(lambda m=py_match, t=text: m(t), slow_number)  # type: ignore[misc]
        print(f"{label:<26}{fast:>10.2f}{slow:>12.2f}")
    redos = full_match_predicate("^(a+)+$")
    long_text = "a" * 100_000 + "!"
    print(f"{'^(a+)+$ (100k chars)':<26}{_per_call_us(lambda: redos(long_text), 20):>10.2f}{'never ends':>12}")


if __name__ == "__main__":
    main()
