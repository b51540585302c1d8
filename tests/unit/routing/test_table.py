"""Route tables: first match wins, OR across blocks, virtual host selection, the index."""

from __future__ import annotations

import random

import pytest

from meshlib.config.model import MeshSnapshot, Route, RouteConfiguration, RouteMatch, VirtualHost
from meshlib.errors import ConfigInvalid
from meshlib.routing import RouteTable
from meshlib.routing.match import compile_match

from .helpers import PRESENT, exact, prefix, regex, request, route, snapshot


def routed(table: RouteTable, *args: object, port: int = 9080, **kwargs: object) -> str | None:
    hit = table.route(request(*args, **kwargs), port)  # type: ignore[arg-type]
    return None if hit is None else hit.route.source.rule_name


class TestOrder:
    def test_first_match_wins_and_falls_through(self) -> None:
        table = RouteTable.compile(
            snapshot(
                (
                    route("jason", RouteMatch(headers=(("end-user", exact("jason")),))),
                    route("api", RouteMatch(uri=prefix("/api"))),
                    route("api-v2", RouteMatch(uri=prefix("/api/v2"))),  # shadowed by "api"
                    route("default"),
                )
            )
        )
        assert routed(table, "/api/v2/x", headers={"end-user": "jason"}) == "jason"
        assert routed(table, "/api/v2/x") == "api"
        assert routed(table, "/other") == "default"

    def test_blocks_are_ored_and_matched_block_reported(self) -> None:
        b1 = RouteMatch(uri=prefix("/a"), method=exact("POST"))
        b2 = RouteMatch(uri=exact("/b"))
        table = RouteTable.compile(snapshot((route("r", b1, b2), route("default"))))
        hit = table.route(request("/a/1", method="POST"), 9080)
        assert hit is not None
        assert hit.matched is b1
        hit = table.route(request("/b"), 9080)
        assert hit is not None
        assert hit.matched is b2
        assert routed(table, "/a/1") == "default"  # b1 needs POST; AND within a block

    def test_route_without_blocks_matches_everything(self) -> None:
        table = RouteTable.compile(snapshot((route("all"),)))
        hit = table.route(request("/x/y", method="DELETE"), 9080)
        assert hit is not None
        assert hit.matched is None
        assert hit.route.source.rule_name == "all"

    def test_no_route_gives_none(self) -> None:
        table = RouteTable.compile(snapshot((route("api", RouteMatch(uri=prefix("/api"))),)))
        assert table.route(request("/other"), 9080) is None

    def test_port_mismatch_blocks_are_dropped(self) -> None:
        only_8080 = RouteMatch(uri=prefix("/"), port=8080)
        table = RouteTable.compile(snapshot((route("p", only_8080), route("default"))))
        assert routed(table, "/x") == "default"
        # A route all of whose blocks are for another port is gone, not match-all.
        table = RouteTable.compile(snapshot((route("p", only_8080),)))
        assert routed(table, "/x") is None
        assert routed(RouteTable.compile(snapshot((route("p", RouteMatch(port=9080)),))), "/x") == "p"

    def test_index_respects_order_across_kinds(self) -> None:
        table = RouteTable.compile(
            snapshot(
                (
                    route("regex", RouteMatch(uri=regex("/items/[0-9]+"))),
                    route("exact", RouteMatch(uri=exact("/items/1"))),
                    route("ci", RouteMatch(uri=prefix("/ITEMS", ignore_case=True))),
                    route("hdr", RouteMatch(headers=(("x", PRESENT),))),
                    route("method", RouteMatch(method=exact("PUT"))),
                    route("prefix", RouteMatch(uri=prefix("/items"))),
                )
            )
        )
        assert routed(table, "/items/1") == "regex"
        assert routed(table, "/items/x") == "ci"
        assert routed(table, "/Items/x") == "ci"
        assert routed(table, "/x", headers={"x": ""}) == "hdr"
        assert routed(table, "/x", method="PUT") == "method"
        assert routed(table, "/x") is None

    def test_multiple_conditions_on_one_header(self) -> None:
        block = RouteMatch(headers=(("x", prefix("a")), ("x", regex(".*z"))))
        table = RouteTable.compile(snapshot((route("r", block),)))
        assert routed(table, "/", headers={"x": "abz"}) == "r"
        assert routed(table, "/", headers={"x": "ab"}) is None
        assert routed(table, "/", headers={"x": "bz"}) is None

    def test_without_headers_and_query_in_table(self) -> None:
        table = RouteTable.compile(
            snapshot(
                (
                    route("not-jason", RouteMatch(without_headers=(("end-user", exact("jason")),))),
                    route("debug", RouteMatch(query_params=(("debug", PRESENT),))),
                )
            )
        )
        assert routed(table, "/") == "not-jason"
        assert routed(table, "/", headers={"end-user": "jason"}) is None
        assert routed(table, "/", headers={"end-user": "jason"}, query={"debug": "1"}) == "debug"

    def test_invalid_regex_is_a_config_error(self) -> None:
        with pytest.raises(ConfigInvalid, match="invalid regex"):
            RouteTable.compile(snapshot((route("bad", RouteMatch(uri=regex("/a(["))),)))
        with pytest.raises(ConfigInvalid, match="invalid regex"):
            RouteTable.compile(snapshot((route("bad", RouteMatch(headers=(("x", regex("(")),))),)))


class TestVirtualHosts:
    @staticmethod
    def table() -> RouteTable:
        def vh(name: str, *domains: str) -> VirtualHost:
            return VirtualHost(name, domains, (route(name),))

        vhosts = (
            vh("reviews", "reviews", "reviews:9080", "reviews.default", "reviews.default.svc.cluster.local"),
            vh("wild", "*.example.com"),
            vh("wild-longer", "*-api.example.com"),
            vh("prefix", "internal.*"),
            vh("any", "*"),
        )
        return RouteTable.compile(snapshot(vhosts=vhosts))

    @pytest.mark.parametrize(
        ("authority", "expected"),
        [
            ("reviews", "reviews"),
            ("reviews:9080", "reviews"),
            ("REVIEWS:9080", "reviews"),
            ("reviews.default", "reviews"),
            ("reviews.default.svc.cluster.local", "reviews"),
            ("reviews.default.svc.cluster.local:9080", "any"),  # not listed with the port
            ("a.example.com", "wild"),
            ("A.Example.COM", "wild"),
            ("x-api.example.com", "wild-longer"),
            (".example.com", "any"),  # the wildcard must stand for at least one character
            ("internal.foo", "prefix"),
            ("ratings:9080", "any"),
        ],
    )
    def test_domain_selection(self, authority: str, expected: str) -> None:
        table = self.table()
        assert routed(table, "/", authority=authority) == expected
        vhost = table.virtual_host(authority, 9080)
        assert vhost is not None
        assert vhost.name == expected

    def test_exact_beats_suffix_beats_prefix_beats_any(self) -> None:
        def vh(name: str, *domains: str) -> VirtualHost:
            return VirtualHost(name, domains, (route(name),))

        vhosts = (vh("any", "*"), vh("prefix", "api.*"), vh("suffix", "*.com"), vh("exact", "api.com"))
        table = RouteTable.compile(snapshot(vhosts=vhosts))
        assert routed(table, "/", authority="api.com") == "exact"
        assert routed(table, "/", authority="api.x.com") == "suffix"
        assert routed(table, "/", authority="api.org") == "prefix"
        assert routed(table, "/", authority="web.org") == "any"

    def test_unknown_host_and_port(self) -> None:
        table = RouteTable.compile(snapshot((route("r"),)))
        assert table.route(request("/", authority="ratings"), 9080) is None
        assert not table.has_virtual_host("ratings", 9080)
        assert table.has_virtual_host("reviews", 9080)
        assert table.route(request("/"), 8080) is None
        assert not table.has_virtual_host("reviews", 8080)

    def test_diagnostics(self) -> None:
        table = RouteTable.compile(snapshot((route("r", RouteMatch(uri=prefix("/a"))), route("d"))))
        assert table.route_config_names() == ["9080"]
        assert table.route_configuration(9080) is not None
        assert [vh.name for vh in table.virtual_hosts(9080)] == ["reviews.default.svc.cluster.local:9080"]
        assert table.virtual_hosts(1) == ()
        trace = table.match_trace(request("/b"), 9080)
        assert [(hit.route.source.rule_name, ok) for hit, ok in trace] == [("r", False), ("d", True)]
        assert "entries=2" in repr(table)


# --------------------------------------------------------------------------- index == naive scan

_PATHS = ["/", "/a", "/ab", "/a/b", "/A/b", "/api", "/api/v1", "/api/v1/x", "/API/V1", "/b/1", "/b/12", "/x"]
_VALUES = ["a", "ab", "b", "", "A", "a,b"]


def _random_string_match(rng: random.Random, pool: list[str], allow_present: bool) -> object:
    kind = rng.choice(
        ["exact", "prefix", "regex", "present"] if allow_present else ["exact", "prefix", "regex"]
    )
    if kind == "present":
        return PRESENT
    value = rng.choice(pool)
    ignore = rng.random() < 0.2
    if kind == "regex":
        value = rng.choice([value + ".*", value + "[0-9]*", "(" + value + "|/b)/.*", ".*", value])
        return regex(value, ignore)
    return (exact if kind == "exact" else prefix)(value, ignore)


def _random_block(rng: random.Random) -> RouteMatch:
    kwargs: dict[str, object] = {}
    if rng.random() < 0.85:
        kwargs["uri"] = _random_string_match(rng, ["/a", "/ab", "/api", "/api/v1", "/b/1", "/A", "/"], False)
    if rng.random() < 0.2:
        kwargs["method"] = exact(rng.choice(["GET", "POST"]))
    if rng.random() < 0.4:
        kwargs["headers"] = tuple(
            (rng.choice(["x", "y"]), _random_string_match(rng, _VALUES, True))
            for _ in range(rng.randint(1, 2))
        )
    if rng.random() < 0.15:
        kwargs["without_headers"] = (("y", _random_string_match(rng, _VALUES, True)),)
    if rng.random() < 0.1:
        kwargs["query_params"] = (("q", _random_string_match(rng, _VALUES, True)),)
    return RouteMatch(**kwargs)  # type: ignore[arg-type]


def _naive(routes: tuple[Route, ...], req: object) -> tuple[Route, RouteMatch | None] | None:
    for r in routes:
        if not r.matches:
            if req.path.startswith("/"):  # type: ignore[attr-defined]
                return r, None
            continue
        for m in r.matches:
            if compile_match(m)(req):  # type: ignore[arg-type]
                return r, m
    return None


@pytest.mark.parametrize("seed", range(40))
def test_index_agrees_with_in_order_scan(seed: int) -> None:
    rng = random.Random(seed)
    routes = tuple(
        route(f"r{i}", *(_random_block(rng) for _ in range(rng.choice([0, 1, 1, 1, 1, 1, 2, 2, 2, 3]))))
        for i in range(rng.randint(1, 30))
    )
    table = RouteTable.compile(
        MeshSnapshot(
            "t",
            route_configs={
                "9080": RouteConfiguration("9080", (VirtualHost("v", ("reviews:9080",), routes),))
            },
        )
    )
    for _ in range(300):
        headers = {h: rng.choice(_VALUES) for h in ("x", "y") if rng.random() < 0.6}
        query = {"q": rng.choice(_VALUES)} if rng.random() < 0.3 else {}
        req = request(rng.choice(_PATHS), method=rng.choice(["GET", "POST"]), headers=headers, query=query)
        hit = table.route(req, 9080)
        expected = _naive(routes, req)
        got = None if hit is None else (hit.route, hit.matched)
        assert got == expected, (req, got, expected)
        if expected is not None:
            assert got is not None
            assert got[0] is expected[0]
            assert got[1] is expected[1]
