"""Rewrites, redirects, header operations and mirrors (semantics.md §6)."""

from __future__ import annotations

import random

import pytest
from multidict import CIMultiDict

from meshlib.config.model import HeaderOps, Mirror, Redirect, Rewrite, RouteMatch
from meshlib.routing import (
    apply_header_ops,
    authority_from_header_ops,
    mirrors_to_send,
    redirect_location,
    rewrite_authority,
    rewrite_path,
    shadow_authority,
    should_mirror,
)
from meshlib.routing.actions import re2_substitution

from .helpers import exact, prefix, regex, request, route


class TestRewritePath:
    def test_prefix_replaces_the_matched_prefix(self) -> None:
        m = RouteMatch(uri=prefix("/reviews"))
        assert rewrite_path(Rewrite(uri="/v2/reviews"), "/reviews/1", m) == "/v2/reviews/1"
        assert rewrite_path(Rewrite(uri="/"), "/reviews/1", m) == "//1"  # Envoy does not normalise
        m = RouteMatch(uri=prefix("/reviews/"))
        assert rewrite_path(Rewrite(uri="/"), "/reviews/1", m) == "/1"

    def test_ignore_case_prefix_replaces_same_length(self) -> None:
        m = RouteMatch(uri=prefix("/API", ignore_case=True))
        assert rewrite_path(Rewrite(uri="/v2"), "/api/x", m) == "/v2/x"

    def test_exact_and_regex_replace_the_whole_path(self) -> None:
        assert rewrite_path(Rewrite(uri="/new"), "/old", RouteMatch(uri=exact("/old"))) == "/new"
        assert rewrite_path(Rewrite(uri="/new"), "/old/12", RouteMatch(uri=regex("/old/[0-9]+"))) == "/new"

    def test_no_uri_match_is_envoys_prefix_slash(self) -> None:
        # istiod emits prefix "/" for a block without uri: only the leading "/" is replaced.
        assert rewrite_path(Rewrite(uri="/v2/"), "/reviews", RouteMatch()) == "/v2/reviews"
        assert rewrite_path(Rewrite(uri="/v2/"), "/reviews", None) == "/v2/reviews"

    def test_regex_rewrite_with_groups(self) -> None:
        rw = Rewrite(uri_regex=("^/service/([^/]+)(/.*)$", "\\2/instance/\\1"))
        assert rewrite_path(rw, "/service/foo/v1/api", RouteMatch()) == "/v1/api/instance/foo"

    def test_regex_rewrite_replaces_every_match(self) -> None:
        assert rewrite_path(Rewrite(uri_regex=("a", "b")), "/aaa", None) == "/bbb"

    def test_no_rewrite(self) -> None:
        assert rewrite_path(Rewrite(authority="x"), "/p", None) == "/p"
        assert rewrite_path(Rewrite(uri=""), "/p", None) == "/p"

    @pytest.mark.parametrize(
        ("re2", "python"),
        [("\\1", "\\g<1>"), ("a\\0b", "a\\g<0>b"), ("\\\\", "\\\\"), ("x\\12", "x\\g<1>2"), ("\\q", "\\\\q")],
    )
    def test_re2_substitution(self, re2: str, python: str) -> None:
        assert re2_substitution(re2) == python


def test_rewrite_authority() -> None:
    assert rewrite_authority(Rewrite(authority="ratings"), "reviews:9080") == "ratings"
    assert rewrite_authority(Rewrite(uri="/x"), "reviews:9080") == "reviews:9080"
    assert rewrite_authority(None, "reviews") == "reviews"


class TestRedirect:
    def test_default_is_301_and_keeps_host_and_query(self) -> None:
        req = request("/old", authority="reviews:9080", query={"a": "1"})
        assert redirect_location(Redirect(uri="/new"), req, 9080) == (301, "http://reviews:9080/new?a=1")
        assert redirect_location(Redirect(uri="/new"), req, 9080, query="") == (
            301,
            "http://reviews:9080/new",
        )

    @pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
    def test_codes(self, code: int) -> None:
        status, _ = redirect_location(Redirect(uri="/x", code=code), request("/"), 9080)
        assert status == code

    def test_authority_replaces_host_and_port(self) -> None:
        loc = redirect_location(Redirect(authority="ratings"), request("/p", authority="reviews:9080"), 9080)
        assert loc == (301, "http://ratings/p")

    def test_uri_with_query_overrides_request_query(self) -> None:
        loc = redirect_location(Redirect(uri="/n?b=2"), request("/p"), 9080, query="a=1")
        assert loc[1] == "http://reviews:9080/n?b=2"

    def test_explicit_port(self) -> None:
        loc = redirect_location(Redirect(port=8443), request("/p", authority="reviews:9080"), 9080)
        assert loc[1] == "http://reviews:8443/p"

    def test_default_port_for_scheme_is_not_written(self) -> None:
        # istiod drops port 80 for http; the request host then keeps its own port (Envoy).
        loc = redirect_location(Redirect(port=80), request("/p", authority="reviews:9080"), 9080)
        assert loc[1] == "http://reviews:9080/p"
        loc = redirect_location(Redirect(port=443, scheme="https"), request("/p", authority="reviews"), 80)
        assert loc[1] == "https://reviews/p"

    def test_derive_port_from_request_port(self) -> None:
        loc = redirect_location(
            Redirect(authority="ratings", derive_port="FROM_REQUEST_PORT"), request("/p"), 9080
        )
        assert loc[1] == "http://ratings:9080/p"

    def test_derive_port_from_protocol_default(self) -> None:
        req = request("/p", authority="reviews:80")
        loc = redirect_location(Redirect(scheme="https", derive_port="FROM_PROTOCOL_DEFAULT"), req, 80)
        assert loc[1] == "https://reviews/p"  # :80 stripped on the http → https switch
        loc = redirect_location(Redirect(scheme="https"), request("/p", authority="reviews:9080"), 9080)
        assert loc[1] == "https://reviews:9080/p"  # a non-default port is kept

    def test_ipv6_host(self) -> None:
        loc = redirect_location(Redirect(port=8080), request("/p", authority="[::1]:9080"), 9080)
        assert loc[1] == "http://[::1]:8080/p"

    def test_relative_uri_gets_a_slash(self) -> None:
        assert redirect_location(Redirect(uri="x"), request("/p"), 9080)[1] == "http://reviews:9080/x"


class TestHeaderOps:
    def test_set_add_remove_on_multidict(self) -> None:
        headers: CIMultiDict[str] = CIMultiDict([("x-a", "1"), ("x-a", "2"), ("x-b", "b"), ("x-gone", "g")])
        ops = HeaderOps(set=(("X-A", "set"),), add=(("x-b", "more"), ("x-new", "n")), remove=("X-Gone",))
        apply_header_ops(ops, headers)
        assert headers.getall("x-a") == ["set"]
        assert headers.getall("x-b") == ["b", "more"]
        assert headers["x-new"] == "n"
        assert "x-gone" not in headers

    def test_remove_runs_before_add(self) -> None:
        headers: CIMultiDict[str] = CIMultiDict([("x", "old")])
        apply_header_ops(HeaderOps(add=(("x", "new"),), remove=("x",)), headers)
        assert headers.getall("x") == ["new"]

    def test_plain_dict(self) -> None:
        headers = {"x-a": "1", "x-b": "b", "x-gone": "g"}
        apply_header_ops(HeaderOps(set=(("X-A", "2"),), add=(("x-b", "c"),), remove=("x-gone",)), headers)
        assert headers == {"x-a": "2", "x-b": "b,c"}

    def test_pseudo_and_host_keys_are_dropped(self) -> None:
        headers: CIMultiDict[str] = CIMultiDict([("host", "reviews"), (":path", "/")])
        ops = HeaderOps(
            set=((":authority", "evil"), ("Host", "evil")), add=((":path", "/x"),), remove=("host", ":path")
        )
        apply_header_ops(ops, headers)
        assert headers.getall("host") == ["reviews"]
        assert headers.getall(":path") == ["/"]

    def test_authority_from_header_ops(self) -> None:
        assert authority_from_header_ops(HeaderOps(set=(("host", "a"),), add=((":authority", "b"),))) == "a"
        assert authority_from_header_ops(HeaderOps(add=((":authority", "b"),))) == "b"
        assert authority_from_header_ops(HeaderOps(set=(("x", "y"),))) is None

    def test_empty_ops_are_a_no_op(self) -> None:
        headers = {"a": "1"}
        apply_header_ops(HeaderOps(), headers)
        assert headers == {"a": "1"}


class TestMirror:
    def test_absent_percentage_is_100_and_zero_is_never(self) -> None:
        rng = random.Random(1)
        assert all(should_mirror(Mirror("c", "h", 1), rng) for _ in range(1000))
        assert not any(should_mirror(Mirror("c", "h", 1, percent=0.0), rng) for _ in range(1000))

    def test_fraction(self) -> None:
        rng = random.Random(5)
        fired = sum(should_mirror(Mirror("c", "h", 1, percent=25.0), rng) for _ in range(20_000))
        assert 0.23 < fired / 20_000 < 0.27
        small = sum(should_mirror(Mirror("c", "h", 1, percent=0.5), rng) for _ in range(100_000))
        assert 300 < small < 700

    def test_mirrors_to_send(self) -> None:
        from dataclasses import replace

        r = replace(route("r"), mirrors=(Mirror("a", "h", 1), Mirror("b", "h", 1, percent=0.0)))
        assert [m.cluster for m in mirrors_to_send(r, random.Random(1))] == ["a"]

    @pytest.mark.parametrize(
        ("authority", "shadow"),
        [
            ("reviews:9080", "reviews-shadow:9080"),
            ("reviews", "reviews-shadow"),
            ("reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local-shadow"),
            ("[::1]:80", "[::1]:80-shadow"),
        ],
    )
    def test_shadow_authority(self, authority: str, shadow: str) -> None:
        assert shadow_authority(authority) == shadow
