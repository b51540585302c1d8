"""Durations, RE2 regex checks, host resolution and the line-keeping YAML reader."""

from __future__ import annotations

import time

import pytest

from meshlib.config.durations import parse_duration
from meshlib.config.hosts import host_matches, host_problem, resolve_host
from meshlib.config.regex import full_match_predicate, regex_problem
from meshlib.config.yaml_nodes import parse_yaml


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("0.5s", 0.5),
        ("100ms", 0.1),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("1h30m", 5400.0),
        ("250us", 250e-6),
        ("10ns", 10e-9),
        ("0", 0.0),
        ("0s", 0.0),
        (".5s", 0.5),
    ],
)
def test_valid_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["-1s", "1", "5", "s", "", "1 s", "1d", "one", "1.2.3s", 5, True, None])
def test_invalid_durations(text: object) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize(
    "pattern",
    ["^/api/v[0-9]+/.*", "(?i)jason", "[a-z]{2,5}", "(?P<id>\\d+)", "a|b|c", "\\bword\\b", "x{1000}",
     "[[:alpha:]]+", "\\pN+", "\\Qa.b\\E"],
)
def test_re2_compatible_regexes(pattern: str) -> None:
    assert regex_problem(pattern) is None


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(?=a)b", "(RE2 does not support lookahead or lookbehind)"),
        ("(?<=a)b", "lookahead or lookbehind"),
        ("(?<!a)b", "lookahead or lookbehind"),
        ("(a)\\1", "invalid escape sequence: \\1 (RE2 does not support backreferences)"),
        ("(?P<x>a)(?P=x)", "backreferences"),
        ("(?>ab)c", "atomic groups"),
        ("a*+", "possessive quantifiers"),
        ("(a)?(?(1)b|c)", "conditional groups"),
        ("abc\\Z", "invalid escape sequence: \\Z"),
        ("(?x) a b", "verbose"),
        ("a{1001}", "invalid repetition size: {1001}"),
        ("(?:a{1000}){30}", "at most 1000 repetitions"),
        ("(x|(?=y))", "lookahead"),
        ("(", "missing ): ("),
        ("[z-a]", "invalid character class range: z-a"),
        ("a" * 1025, "regex is too large: 1025 characters (Istio allows at most 1024)"),
        ("(\\pL|\\pN){200}", "RE2 program size"),
    ],
)
def test_regexes_rejected(pattern: str, reason: str) -> None:
    problem = regex_problem(pattern)
    assert problem is not None
    assert reason in problem


def test_program_size_limit_names_both_limits() -> None:
    problem = regex_problem("(\\pL|\\pN){200}")
    assert problem is not None
    assert "exceeds the maximum 32768" in problem and "default is 100" in problem


def test_lookahead_text_inside_a_class_is_fine() -> None:
    assert regex_problem("[(?=]x") is None


def test_catastrophic_backtracking_patterns_run_in_linear_time() -> None:
    # With Python's re these take seconds (26 chars) to forever (40 chars); RE2 is linear.
    nested = full_match_predicate("^(a+)+$")
    overlapping = full_match_predicate("/(x+x+)+y")
    started = time.perf_counter()
    assert nested("a" * 5000 + "!") is False
    assert overlapping("/" + "x" * 5000) is False
    assert nested("a" * 40) is True
    assert time.perf_counter() - started < 1.0  # generous: microseconds in practice


def test_full_match_is_anchored_both_ends() -> None:
    matches = full_match_predicate("b+")
    assert matches("bbb") and not matches("abbb") and not matches("bbba")


@pytest.mark.parametrize(
    ("host", "namespace", "known", "fqdn"),
    [
        ("reviews", "default", (), "reviews.default.svc.cluster.local"),
        ("Reviews", "prod", (), "reviews.prod.svc.cluster.local"),
        ("reviews.prod", "default", ("reviews.prod.svc.cluster.local",), "reviews.prod.svc.cluster.local"),
        ("reviews.prod", "default", (), "reviews.prod"),  # no such service: kept as written
        ("example.com", "default", (), "example.com"),
        ("api.example.com", "default", (), "api.example.com"),
        ("reviews.prod.svc.cluster.local", "default", (), "reviews.prod.svc.cluster.local"),
        ("*.example.com", "default", (), "*.example.com"),
        ("*", "default", (), "*"),
    ],
)
def test_resolve_host(host: str, namespace: str, known: tuple[str, ...], fqdn: str) -> None:
    assert resolve_host(host, namespace, known) == fqdn


def test_host_matching() -> None:
    assert host_matches("*.example.com", "api.example.com")
    assert host_matches("*.example.com", "a.b.example.com")
    assert not host_matches("*.example.com", "example.com")
    assert host_matches("*", "anything.at.all")
    assert host_matches("*.com", "*.example.com")
    assert not host_matches("*.example.com", "*.com")


@pytest.mark.parametrize("host", ["reviews", "api.example.com", "*.example.com", "10.0.0.1", "*"])
def test_valid_hosts(host: str) -> None:
    assert host_problem(host) is None


@pytest.mark.parametrize("host", ["bad_host", "-x.com", "a..b", "*.*.com", "a.*.com", ""])
def test_invalid_hosts(host: str) -> None:
    assert host_problem(host) is not None


def test_star_host_can_be_forbidden() -> None:
    assert host_problem("*", allow_star=False) == 'invalid host "*"'


def test_yaml_keeps_key_lines_and_types() -> None:
    documents, errors = parse_yaml("a: 1\nb:\n  c: [x, 2]\n  on: yes\n---\n---\nz: 1.5\n")
    assert errors == []
    first = documents[0].root
    assert first is not None
    assert first.mapping["a"].scalar == 1
    assert first.mapping["a"].line == 1
    b = first.mapping["b"]
    assert b.line == 2
    assert b.mapping["c"].line == 3
    assert [n.scalar for n in b.mapping["c"].sequence] == ["x", 2]
    assert b.mapping["on"].scalar is True  # keys keep their text; values are typed
    assert documents[1].root is None
    assert documents[2].root is not None
    assert documents[2].line == 7


def test_yaml_syntax_error_is_located_not_raised() -> None:
    documents, errors = parse_yaml("ok: 1\n---\na: b: c\n")
    assert len(documents) == 1
    assert errors[0].line == 3
    assert errors[0].message.startswith("YAML syntax error:")


def test_yaml_merge_keys_and_duplicates() -> None:
    documents, errors = parse_yaml("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n  z: 1\n  z: 2\n")
    root = documents[0].root
    assert root is not None
    use = root.mapping["use"]
    assert {k: v.scalar for k, v in use.mapping.items()} == {"x": 1, "y": 3, "z": 1}
    assert [(e.line, e.message) for e in errors] == [(6, 'duplicate key "z"')]


def test_yaml_recursive_alias_is_an_error() -> None:
    _, errors = parse_yaml("a: &x [*x]\n")
    assert [e.message for e in errors] == ["recursive YAML alias"]
