"""The admin's /stats renderers, its RE2 filter, the no-JS fallback's escaping, and attach's error line."""

from __future__ import annotations

import doctest
import io

import pytest

import meshlib.admin.fallback
import meshlib.admin.stats_view
from meshlib.admin.attach import attach
from meshlib.admin.fallback import render_fallback
from meshlib.admin.stats_view import (
    FilterError,
    compile_filter,
    filter_prometheus,
    render_json,
    render_text,
    stats_lines,
)

STATS = {
    "clusters": {
        "outbound|9080||a": {"upstream_rq_total": 3, "rq_open": 0, "ejected_hosts": {"10.0.0.1:80": 12.5},
                             "retry_budget_balance": 1.5},
    },
    "breakers": {"db": {"state": "open", "failures_total": 2}},
}


def test_docstring_examples() -> None:
    for module in (meshlib.admin.stats_view, meshlib.admin.fallback):
        result = doctest.testmod(module)
        assert result.attempted >= 1 and result.failed == 0


def test_text_names_follow_envoy() -> None:
    text = render_text(stats_lines(STATS, None))
    assert text.splitlines() == [
        "cluster.outbound|9080||a.circuit_breakers.default.rq_open: 0",
        "cluster.outbound|9080||a.outlier_detection.ejections_active: 1",
        "cluster.outbound|9080||a.retry_budget_balance: 1.5",
        "cluster.outbound|9080||a.upstream_rq_total: 3",
        "meshlib.breaker.db.failures_total: 2",
    ]


def test_filter_searches_and_usedonly_drops_zeros() -> None:
    lines = stats_lines(STATS, None)
    keep = compile_filter("rq_(open|total)$")
    assert render_json(lines, keep) == {"stats": [
        {"name": "cluster.outbound|9080||a.circuit_breakers.default.rq_open", "value": 0},
        {"name": "cluster.outbound|9080||a.upstream_rq_total", "value": 3},
    ]}
    assert render_text(lines, keep, used_only=True) == "cluster.outbound|9080||a.upstream_rq_total: 3\n"
    assert compile_filter("") is None


@pytest.mark.parametrize("pattern", ["(a", "a" * 1025, "(?<=x)y"])  # unbalanced, too long, lookbehind (not RE2)
def test_bad_filters_are_refused(pattern: str) -> None:
    with pytest.raises(FilterError):
        compile_filter(pattern)


def test_a_pathological_pattern_is_linear_time() -> None:
    keep = compile_filter("(a+)+$")  # catastrophic backtracking for re; RE2 runs it in linear time
    assert keep is not None and keep("a" * 50_000 + "!") is False


def test_prometheus_filter_keeps_whole_families() -> None:
    text = (
        "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"1\"} 0\nx_total{a=\"2\"} 4\n"
        "# HELP y Y.\n# TYPE y gauge\ny 1\n"
    )
    assert filter_prometheus(text, compile_filter("^x_")) == (
        "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"1\"} 0\nx_total{a=\"2\"} 4\n"
    )
    assert 'x_total{a="1"} 0' not in filter_prometheus(text, None, used_only=True)
    assert filter_prometheus(text, None) == text


def test_fallback_escapes_configuration_text() -> None:
    routes = {"route_configs": [{"name": "80", "virtual_hosts": [{"name": "evil:80", "routes": [{
        "virtual_service": "default/evil", "rule": "r", "index": 0,
        "match": ['headers[x] exact "<script>alert(1)</script>"'], "action": "route",
        "destinations": [], "timeout_s": None, "retries": None, "fault": None,
    }]}]}]}
    html = render_fallback({"version": "v&1"}, {"clusters": []}, routes)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "v&amp;1" in html


def test_attach_reports_an_unreachable_admin_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert attach("http://127.0.0.1:1", timeout_s=2, out=out) == 1
    assert out.getvalue() == ""
    err = capsys.readouterr().err
    assert err.startswith("meshlib admin: cannot read http://127.0.0.1:1:") and err.count("\n") == 1
