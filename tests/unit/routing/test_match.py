"""Single match blocks: every kind of condition and its edge cases (semantics.md §6)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from meshlib.config.model import RouteMatch
from meshlib.request import RequestView
from meshlib.routing.match import compile_match, compile_string_match, header_value, regex_literal_prefixes

from .helpers import PRESENT, exact, prefix, regex, request


def matches(block: RouteMatch, req: RequestView) -> bool:
    return compile_match(block)(req)


class TestUri:
    def test_exact(self) -> None:
        block = RouteMatch(uri=exact("/reviews"))
        assert matches(block, request("/reviews"))
        assert not matches(block, request("/reviews/1"))
        assert not matches(block, request("/Reviews"))

    def test_prefix(self) -> None:
        block = RouteMatch(uri=prefix("/rev"))
        assert matches(block, request("/rev"))
        assert matches(block, request("/reviews/1"))
        assert not matches(block, request("/ratings"))

    def test_regex_is_a_full_match(self) -> None:
        block = RouteMatch(uri=regex("/a"))
        assert matches(block, request("/a"))
        assert not matches(block, request("/ab"))
        assert not matches(block, request("/x/a"))
        assert matches(RouteMatch(uri=regex("/reviews/[0-9]+")), request("/reviews/12"))
        assert not matches(RouteMatch(uri=regex("/reviews/[0-9]+")), request("/reviews/12/x"))

    def test_ignore_case_affects_exact_and_prefix(self) -> None:
        assert matches(RouteMatch(uri=exact("/Reviews", ignore_case=True)), request("/rEVIEWS"))
        assert matches(RouteMatch(uri=prefix("/API", ignore_case=True)), request("/api/v1"))

    def test_ignore_case_does_not_affect_regex(self) -> None:
        block = RouteMatch(uri=regex("/api/[a-z]+", ignore_case=True))
        assert matches(block, request("/api/x"))
        assert not matches(block, request("/API/x"))

    def test_no_uri_is_prefix_slash(self) -> None:
        assert matches(RouteMatch(), request("/anything"))
        assert not matches(RouteMatch(), request("*"))


class TestPseudoHeaders:
    def test_method(self) -> None:
        block = RouteMatch(method=exact("POST"))
        assert matches(block, request(method="POST"))
        assert not matches(block, request(method="GET"))

    def test_authority(self) -> None:
        block = RouteMatch(authority=prefix("reviews"))
        assert matches(block, request(authority="reviews:9080"))
        assert not matches(block, request(authority="ratings:9080"))
        assert matches(RouteMatch(authority=regex("reviews(:[0-9]+)?")), request(authority="reviews:1"))

    def test_scheme(self) -> None:
        block = RouteMatch(scheme=exact("https"))
        assert matches(block, request(scheme="https"))
        assert not matches(block, request(scheme="http"))

    def test_pseudo_header_names_in_headers(self) -> None:
        assert matches(RouteMatch(headers=((":method", exact("PUT")),)), request(method="PUT"))
        assert not matches(RouteMatch(headers=((":method", exact("PUT")),)), request(method="GET"))


class TestHeaders:
    def test_exact_prefix_regex(self) -> None:
        assert matches(
            RouteMatch(headers=(("end-user", exact("jason")),)), request(headers={"end-user": "jason"})
        )
        assert not matches(
            RouteMatch(headers=(("end-user", exact("jason")),)), request(headers={"end-user": "j"})
        )
        assert matches(RouteMatch(headers=(("x-v", prefix("v2")),)), request(headers={"x-v": "v2.1"}))
        assert matches(RouteMatch(headers=(("x-v", regex("v[0-9]")),)), request(headers={"x-v": "v7"}))
        assert not matches(RouteMatch(headers=(("x-v", regex("v[0-9]")),)), request(headers={"x-v": "v77"}))

    def test_missing_header_never_matches_a_value(self) -> None:
        for sm in (exact(""), prefix(""), regex(".*")):
            assert not matches(RouteMatch(headers=(("end-user", sm),)), request())

    def test_present_matches_any_value_including_empty(self) -> None:
        block = RouteMatch(headers=(("end-user", PRESENT),))
        assert matches(block, request(headers={"end-user": ""}))
        assert matches(block, request(headers={"end-user": "x"}))
        assert not matches(block, request())

    def test_header_names_are_case_insensitive(self) -> None:
        block = RouteMatch(headers=(("End-User", exact("jason")),))
        assert matches(block, request(headers={"end-user": "jason"}))
        view = RequestView("GET", "reviews", "/", headers=CIMultiDict({"END-USER": "jason"}))
        assert matches(block, view)

    def test_repeated_header_matches_joined_values(self) -> None:
        headers: CIMultiDict[str] = CIMultiDict([("x-tag", "a"), ("x-tag", "b")])
        assert header_value(headers, "x-tag") == "a,b"
        view = RequestView("GET", "reviews", "/", headers=headers)
        assert matches(RouteMatch(headers=(("x-tag", exact("a,b")),)), view)
        assert not matches(RouteMatch(headers=(("x-tag", exact("a")),)), view)

    def test_header_values_are_case_sensitive(self) -> None:
        assert not matches(
            RouteMatch(headers=(("end-user", exact("jason")),)), request(headers={"end-user": "Jason"})
        )


class TestWithoutHeaders:
    def test_value_matcher_matches_when_missing(self) -> None:
        block = RouteMatch(without_headers=(("end-user", exact("jason")),))
        assert matches(block, request())
        assert matches(block, request(headers={"end-user": "mike"}))
        assert not matches(block, request(headers={"end-user": "jason"}))

    def test_missing_header_is_treated_as_empty(self) -> None:
        # treat_missing_header_as_empty: "" matches exact "" so the inverted match fails.
        assert not matches(RouteMatch(without_headers=(("x", exact("")),)), request())
        assert not matches(RouteMatch(without_headers=(("x", regex(".*")),)), request())

    def test_present_matches_only_when_absent(self) -> None:
        block = RouteMatch(without_headers=(("end-user", PRESENT),))
        assert matches(block, request())
        assert not matches(block, request(headers={"end-user": ""}))


class TestQueryParams:
    def test_kinds(self) -> None:
        assert matches(RouteMatch(query_params=(("v", exact("2")),)), request(query={"v": "2"}))
        assert not matches(RouteMatch(query_params=(("v", exact("2")),)), request(query={"v": "20"}))
        assert matches(RouteMatch(query_params=(("v", prefix("2")),)), request(query={"v": "20"}))
        assert matches(RouteMatch(query_params=(("v", regex("[0-9]+")),)), request(query={"v": "20"}))
        assert not matches(RouteMatch(query_params=(("v", regex("[0-9]")),)), request(query={"v": "20"}))

    def test_present_and_missing(self) -> None:
        assert matches(RouteMatch(query_params=(("debug", PRESENT),)), request(query={"debug": ""}))
        assert not matches(RouteMatch(query_params=(("debug", PRESENT),)), request())
        assert not matches(RouteMatch(query_params=(("debug", exact("")),)), request())


def test_fields_within_a_block_are_anded() -> None:
    block = RouteMatch(uri=prefix("/api"), method=exact("GET"), headers=(("end-user", exact("jason")),))
    assert matches(block, request("/api/x", headers={"end-user": "jason"}))
    assert not matches(block, request("/api/x", method="POST", headers={"end-user": "jason"}))
    assert not matches(block, request("/api/x"))
    assert not matches(block, request("/x", headers={"end-user": "jason"}))


def test_string_match_unknown_kind() -> None:
    from meshlib.config.model import StringMatch

    with pytest.raises(ValueError, match="unknown"):
        compile_string_match(StringMatch("glob", "x"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("/api/v[0-9]+/.*", ("/api/v",)),
        ("/a", ("/a",)),
        ("/ab*", ("/a",)),
        ("(/a|/b)/.*", ("/a/", "/b/")),
        ("/a|/b", ("/a", "/b")),
        ("^/x/.*", ("/x/",)),
        ("\\.well-known/.*", (".well-known/",)),
        ("(?i)/api/.*", ()),
        ("/a|.*", ()),
        (".*", ()),
        ("[/]api", ("/api",)),
        ("/[ab]c", ("/ac", "/bc")),
        ("/[^a]c", ("/",)),
        ("/[a-z]c", ("/",)),
        ("/v1/(reviews|ratings)/[0-9]+", ("/v1/reviews/", "/v1/ratings/")),
    ],
)
def test_regex_literal_prefixes(pattern: str, expected: tuple[str, ...]) -> None:
    assert regex_literal_prefixes(pattern) == expected
