"""SpiffeId parsing and validation per the SPIFFE-ID standard."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlib.security import InvalidSpiffeId, SpiffeId


def test_istio_workload_form() -> None:
    sid = SpiffeId.parse("spiffe://cluster.local/ns/default/sa/reviews")
    assert (sid.trust_domain, sid.namespace, sid.service_account) == ("cluster.local", "default", "reviews")
    assert sid.is_istio_workload
    assert sid.principal == "cluster.local/ns/default/sa/reviews"
    assert str(SpiffeId.for_workload("default", "reviews")) == "spiffe://cluster.local/ns/default/sa/reviews"


def test_scheme_and_trust_domain_case_insensitive_path_case_sensitive() -> None:
    sid = SpiffeId.parse("SPIFFE://Example.ORG/Payments")
    assert sid == SpiffeId("example.org", "/Payments")
    assert sid != SpiffeId.parse("spiffe://example.org/payments")


def test_trust_domain_only_and_non_istio_path() -> None:
    assert SpiffeId.parse("spiffe://example.org").path == ""
    other = SpiffeId.parse("spiffe://example.org/svc/web")
    assert not other.is_istio_workload
    assert other.namespace is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("http://example.org/a", "does not start with 'spiffe://'"),
        ("spiffe://", "trust domain is empty"),
        ("spiffe:///path", "trust domain is empty"),
        ("spiffe://exa mple.org/a", "trust domain"),
        ("spiffe://user@example.org/a", "userinfo"),
        ("spiffe://example.org:8080/a", "port"),
        ("spiffe://example.org/a?x=1", "query"),
        ("spiffe://example.org/a#frag", "fragment"),
        ("spiffe://example.org/a%20b", "percent-encoding"),
        ("spiffe://example.org/", "must not end with '/'"),
        ("spiffe://example.org/a//b", "empty segment"),
        ("spiffe://example.org/a/./b", "'.' is not allowed"),
        ("spiffe://example.org/a/../b", "'..' is not allowed"),
        ("spiffe://example.org/a/b$c", "contains '$'"),
        ("spiffe://" + "a" * 256 + "/x", "longer than 255 bytes"),
        ("spiffe://example.org/" + "a" * 2040, "longer than 2048 bytes"),
    ],
)
def test_invalid_ids_name_the_broken_rule(text: str, fragment: str) -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.parse(text)
    assert fragment in str(info.value)


def test_member_of_is_case_insensitive() -> None:
    assert SpiffeId.parse("spiffe://cluster.local/ns/a/sa/b").member_of("Cluster.Local")
    assert not SpiffeId.parse("spiffe://cluster.local/ns/a/sa/b").member_of("other.local")


_seg = st.text(alphabet="abcXYZ019.-_", min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


@given(td=st.text(alphabet="abcz09.-_", min_size=1, max_size=40), segs=st.lists(_seg, max_size=6))
def test_round_trip(td: str, segs: list[str]) -> None:
    path = "".join("/" + s for s in segs)
    sid = SpiffeId(td, path)
    assert SpiffeId.parse(str(sid)) == sid


@given(st.text(max_size=300))
def test_parse_never_raises_anything_but_invalid_spiffe_id(text: str) -> None:
    try:
        sid = SpiffeId.parse(text)
    except InvalidSpiffeId:
        return
    assert str(sid).lower().startswith("spiffe://")


def test_docstring_examples_of_identity_modules() -> None:
    import doctest

    import meshlib.security.node_identity
    import meshlib.security.rotation
    import meshlib.security.spiffe
    import meshlib.tracing.url_redaction

    modules = (
        meshlib.security.spiffe,
        meshlib.security.node_identity,
        meshlib.security.rotation,
        meshlib.tracing.url_redaction,
    )
    for module in modules:
        result = doctest.testmod(module)
        assert result.attempted >= 1 and result.failed == 0, module.__name__
