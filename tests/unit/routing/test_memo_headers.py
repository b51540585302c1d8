"""RouteTable.memo_headers: what a memo of routing decisions must key on, per virtual host."""

from __future__ import annotations

from meshlib.config.model import RouteMatch
from meshlib.routing import RouteTable

from .helpers import PRESENT, exact, prefix, regex, route, snapshot


def test_every_header_a_condition_reads_including_regexes_and_absence() -> None:
    table = RouteTable.compile(snapshot((
        route("jason", RouteMatch(headers=(("End-User", exact("jason")),))),
        route("canary", RouteMatch(headers=(("x-canary", regex("on|yes")),))),  # residual, not indexed
        route("no-debug", RouteMatch(uri=prefix("/api"), without_headers=(("x-debug", PRESENT),))),
        route("default"),
    )))
    assert table.memo_headers("reviews:9080", 9080) == ("end-user", "x-canary", "x-debug")
    assert table.memo_headers("REVIEWS:9080", 9080) == ("end-user", "x-canary", "x-debug")  # hosts ignore case


def test_query_conditions_make_a_host_unmemoisable_and_unknown_hosts_read_nothing() -> None:
    table = RouteTable.compile(snapshot((
        route("v2", RouteMatch(query_params=(("v", exact("2")),))),
        route("default"),
    )))
    assert table.memo_headers("reviews:9080", 9080) is None
    assert table.memo_headers("elsewhere:9080", 9080) == ()
    assert table.memo_headers("reviews:9080", 1234) == ()
    assert RouteTable.compile(snapshot((route("default"),))).memo_headers("reviews", 9080) == ()
