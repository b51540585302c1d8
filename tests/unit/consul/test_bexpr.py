"""The go-bexpr evaluator: documented examples, go-bexpr's coercion rules, parse errors, limits."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.discovery.consul.bexpr import MAX_EXPRESSION_LENGTH, MAX_NESTING, BexprError, parse

# A health entry shaped as /v1/health/service/NAME returns it (health.mdx sample, trimmed).
ENTRY: dict[str, Any] = {
    "Node": {
        "Node": "foobar",
        "Address": "10.1.10.12",
        "Datacenter": "dc1",
        "TaggedAddresses": {"lan": "10.1.10.12", "wan": "10.1.10.12"},
        "Meta": {"instance_type": "t2.medium"},
    },
    "Service": {
        "ID": "redis",
        "Service": "redis",
        "Tags": ["primary", "v1"],
        "Address": "10.1.10.12",
        "Port": 8000,
        "Meta": {"redis_version": "4.0", "version": "v1"},
        "Weights": {"Passing": 10, "Warning": 1},
        "EnableTagOverride": False,
    },
    "Checks": [
        {"CheckID": "service:redis", "Status": "passing", "ServiceID": "redis", "ServiceTags": ["primary"]},
        {"CheckID": "serfHealth", "Status": "warning", "ServiceID": "", "ServiceTags": []},
    ],
}

# (filter, expected) — the examples of Consul's filtering docs and health.mdx selectors.
TABLE = [
    ('Service.Meta.version == v1', True),  # bare identifier value (resolver subset docs)
    ('Service.Meta.version == "v2"', False),
    ("Service.Meta.version != v1", False),
    ('"primary" in Service.Tags', True),
    ('"canary" not in Service.Tags', True),
    ("primary not in Service.Tags", False),
    ("Service.Tags contains v1", True),
    ("Service.Tags not contains v1", False),
    ("Service.Tags is not empty", True),
    ("Service.Tags is empty", False),
    ("Service.Meta.absent is empty", True),
    ("Service.Meta.absent == \"\"", True),
    ("Service.Port == 8000", True),
    ("Service.Port != 8000", False),
    ("Service.Weights.Passing == 10", True),
    ("Service.EnableTagOverride == false", True),
    ("Service.EnableTagOverride == F", True),
    ("Node.Datacenter == dc1", True),
    ('Node.Meta.instance_type matches "^t2\\\\."', True),
    ('Node.Meta.instance_type not matches "m5"', True),
    ('Service.Meta.redis_version matches "0"', True),  # unanchored, as Go's regexp.Match
    ("Checks.Status == warning", True),  # any element
    ("Checks.Status == critical", False),
    ("Checks.Status != critical", True),  # no element
    ("Checks.Status != passing", False),
    ("Checks.0.Status == passing", True),
    ('Checks.1.CheckID == "serfHealth"', True),
    ('"primary" in Checks.ServiceTags', True),
    ('Service.Meta["redis_version"] == "4.0"', True),
    ('Service.Meta[`version`] == `v1`', True),
    ('"/Service/Meta/version" == v1', True),
    ('"/Node/TaggedAddresses/wan" == "10.1.10.12"', True),
    ("lan in Node.TaggedAddresses", True),  # map: key membership
    ("Service.Service contains edi", True),  # string: substring
    ("Service.Port == 8000 and Node.Datacenter == dc1", True),
    ("Service.Port == 1 or Node.Datacenter == dc1", True),
    ("not Service.Port == 8000", False),
    ("not not Service.Port == 8000", True),
    ("not (Service.Port == 1 or Service.Port == 2)", True),
    ("(Service.Port == 1 or Service.Port == 8000) and v1 in Service.Tags", True),
    ("  ( Service.Port == 8000 )  ", True),
    ("Service.Port == 1 or Service.Port == 2 and Service.Port == 8000", False),  # and binds tighter
    ('"x" in ["x", "y"]', True),
    ('"z" in ["x", "y"]', False),
]


@pytest.mark.parametrize(("text", "expected"), TABLE)
def test_documented_examples(text: str, expected: bool) -> None:
    assert parse(text).evaluate(ENTRY) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty filter at position 0"),
        ("Service.Port ==", "expected a value at position 15"),
        ("(Service.Port == 1", "unmatched parenthesis at position 0"),
        ('Service.ID == "abc', "unterminated string literal at position 14"),
        ("Service.Port == 01", "invalid number literal at position 16"),
        ("Service.Port == 1x", "invalid number literal at position 16"),
        ("Service.Port 1", "expected an operator (==, !=, contains, matches, in, is empty…) at position 0"),
        ("Service.Port == 1 and", "unexpected 'and' at position 18"),
        ('Service.ID matches "("', "invalid regular expression '(': missing ): ( at position 10"),
        ('Service.Meta["a" == b', "unclosed index expression at position 12"),
        ("Service.Meta[1] == b", "invalid index at position 12"),
        ('"x" in 5', "invalid selector at position 7"),
        ('Service.ID == "\\q"', "invalid escape in string literal at position 15"),
    ],
)
def test_parse_errors_name_the_position(text: str, message: str) -> None:
    with pytest.raises(BexprError) as caught:
        parse(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Service.Port == abc", "value 'abc' is not an integer"),
        ("Service.EnableTagOverride == yes", "value 'yes' is not a boolean"),
        ("Service.Port matches x", "cannot match a regular expression against a number"),
        ("Service.Port is empty", "cannot test a number for emptiness"),
        ("Service.Port.x == 1", "selector 'Service.Port.x': cannot select 'x' from a number"),
        ("Checks.5.Status == passing", "index 5 out of range for selector 'Checks.5.Status'"),
    ],
)
def test_type_mismatches_are_errors(text: str, message: str) -> None:
    with pytest.raises(BexprError) as caught:
        parse(text).evaluate(ENTRY)
    assert str(caught.value) == message


def test_select_keeps_matching_entries_in_order() -> None:
    entries = [{"Service": {"Tags": tags}} for tags in (["a"], ["b"], ["a", "b"])]
    assert parse('"a" in Service.Tags').select(entries) == [entries[0], entries[2]]


def test_limits_on_length_and_nesting() -> None:
    with pytest.raises(BexprError, match="longer than"):
        parse("a == b or " * (MAX_EXPRESSION_LENGTH // 9) + "a == b")
    deep = "(" * (MAX_NESTING + 1) + "a == b" + ")" * (MAX_NESTING + 1)
    with pytest.raises(BexprError, match="nested deeper"):
        parse(deep)
    ok = "(" * (MAX_NESTING - 1) + "a == b" + ")" * (MAX_NESTING - 1)
    assert parse(ok).evaluate({"a": "b"}) is True


def test_regex_is_linear_time() -> None:
    # A catastrophic pattern for a backtracking engine; RE2 answers at once.
    expr = parse('Service.ID matches "^(a+)+$"')
    assert expr.evaluate({"Service": {"ID": "a" * 5000 + "!"}}) is False


_words = st.text(alphabet="abcdefgh", min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(value=_words, tags=st.lists(_words, max_size=5), meta=st.dictionaries(_words, _words, max_size=4))
def test_membership_and_equality_agree_with_python(value: str, tags: list[str], meta: dict[str, str]) -> None:
    datum = {"Service": {"Tags": tags, "Meta": meta}}
    assert parse(f'"{value}" in Service.Tags').evaluate(datum) is (value in tags)
    assert parse(f"{value} not in Service.Tags").evaluate(datum) is (value not in tags)
    assert parse(f"Service.Meta.{value} == x").evaluate(datum) is (meta.get(value, "") == "x")
    assert parse("Service.Meta is empty").evaluate(datum) is (not meta)


@st.composite
def _expressions(draw: st.DrawFn, depth: int = 0) -> tuple[str, bool]:
    """A random well-formed filter over {"a": "1", "b": "2"} and its expected truth value."""
    if depth > 3 or draw(st.booleans()):
        key = draw(st.sampled_from(["a", "b"]))
        value = draw(st.sampled_from(["1", "2"]))
        op = draw(st.sampled_from(["==", "!="]))
        truth = ({"a": "1", "b": "2"}[key] == value) is (op == "==")
        return f"{key} {op} {value}", truth
    kind = draw(st.sampled_from(["and", "or", "not", "paren"]))
    left, left_truth = draw(_expressions(depth + 1))
    if kind == "not":
        return f"not ({left})", not left_truth
    if kind == "paren":
        return f"( {left} )", left_truth
    right, right_truth = draw(_expressions(depth + 1))
    # Parenthesise both sides so the expected value does not depend on precedence.
    truth = (left_truth and right_truth) if kind == "and" else (left_truth or right_truth)
    return f"({left}) {kind} ({right})", truth


@settings(max_examples=300, deadline=None)
@given(case=_expressions())
def test_boolean_structure(case: tuple[str, bool]) -> None:
    text, expected = case
    assert parse(text).evaluate({"a": "1", "b": "2"}) is expected


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_arbitrary_text_parses_or_fails_cleanly(text: str) -> None:
    position: int | None = -1
    try:
        expr = parse(text)
    except BexprError as exc:
        position = exc.position
    else:
        with contextlib.suppress(BexprError):
            expr.evaluate(ENTRY)
        return
    assert position is None or 0 <= position <= len(text)


def test_membership_in_a_null_collection_is_false_as_in_go() -> None:
    # Consul's structs hold nil slices/maps where JSON says null: go-bexpr sees an empty collection.
    entry = {"Service": {"Tags": None, "Meta": None}}
    assert parse('"x" in Service.Tags').evaluate(entry) is False
    assert parse('"x" not in Service.Tags').evaluate(entry) is True
    assert parse('Service.Meta contains "v"').evaluate(entry) is False
