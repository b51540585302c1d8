"""``meshlib demo``: every scene runs on real loopback services and shows what it claims.

One in-process run of all scenes (less traffic than the CLI default) asserts
each scene's table and checks; the CLI paths (a scene subset, a bad scene name,
``--serve`` with ``meshlib admin --attach``) run as subprocesses.
"""

from __future__ import annotations

import asyncio
import io

import pytest

from meshlib.demo import DemoResult, play, scene_names
from tests.integration.cli_process import run_cli, serving_cli

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def demo_run() -> tuple[DemoResult, str]:
    out = io.StringIO()
    result = asyncio.run(play(requests=40, seed=7, file=out))
    return result, out.getvalue()


def rows(result: DemoResult, name: str) -> list[list[str]]:
    return [[str(cell) for cell in row] for row in result.report(name).rows]


async def test_every_scene_ran_and_every_claim_held(demo_run: tuple[DemoResult, str]) -> None:
    result, text = demo_run
    assert [r.name for r in result.reports] == scene_names()
    failed = [c.claim for r in result.reports for c in r.checks if not c.ok]
    assert failed == []
    assert result.ok
    assert sum(len(r.checks) for r in result.reports) >= 17
    assert "\x1b[" not in text  # captured output: no terminal escapes
    for report in result.reports:
        assert report.title in text


async def test_canary_shift_follows_each_reloaded_weight(demo_run: tuple[DemoResult, str]) -> None:
    result, _ = demo_run
    table = rows(result, "canary")
    assert [row[0] for row in table] == ["v1 100% / v3 0%", "v1 80% / v3 20%", "v1 50% / v3 50%", "v1 0% / v3 100%"]
    assert len({row[1] for row in table}) == 4  # four config versions: each edit was hot-reloaded
    assert (table[0][2], table[0][3]) == ("40", "0")
    assert (table[3][2], table[3][3]) == ("0", "40")
    assert 0 < int(table[1][3]) < int(table[2][3]) < 40


async def test_header_routing(demo_run: tuple[DemoResult, str]) -> None:
    result, _ = demo_run
    assert rows(result, "headers") == [
        ["end-user: jason", "jason-sees-v2", "0", "10", "0"],
        ["(no end-user)", "everyone-else", "10", "0", "0"],
    ]


async def test_fault_is_contained_by_the_timeout(demo_run: tuple[DemoResult, str]) -> None:
    result, _ = demo_run
    outcomes = {row[0]: row for row in rows(result, "fault")}
    assert set(outcomes) == {"stars from ratings", "ratings 503 FI", "reviews 504 UT"}
    slowest_timeout_ms = int(outcomes["reviews 504 UT"][3].removesuffix(" ms"))
    assert 300 <= slowest_timeout_ms < 1000  # the 1 s fault delay, cut at the 300 ms route timeout


async def test_retries_absorb_the_flaky_host(demo_run: tuple[DemoResult, str]) -> None:
    result, _ = demo_run
    without, with_retries = rows(result, "retries")
    assert int(without[2]) > 0 and without[4] == "0"  # failures reached the caller, nothing retried
    assert with_retries[2] == "0"  # every visit got its stars
    assert int(with_retries[3]) > 0 and with_retries[4] == with_retries[3]  # one retry per host failure


async def test_outlier_detection_ejects_and_returns_the_host(demo_run: tuple[DemoResult, str]) -> None:
    result, _ = demo_run
    failing, ejected, healed = rows(result, "outlier")
    assert failing[4] == ejected[4] == "127.0.0.1:19192"
    assert int(failing[3]) <= 3  # consecutive5xxErrors: 3
    assert ejected[2] == "0" and ejected[3] == "0"
    assert healed[4] == "none" and int(healed[2]) > 0


async def test_breaker_overflow_is_503_uo(demo_run: tuple[DemoResult, str]) -> None:
    result, _ = demo_run
    calls = {row[0]: int(row[2]) for row in rows(result, "breaker")}
    assert calls == {"200": 2, "503 UO": 8}  # 1 connection + 1 pending admitted of 10 at once
    assert "x-envoy-overloaded: true" in " ".join(" ".join(r) for r in rows(result, "breaker"))


async def test_trace_shows_one_request_across_services(demo_run: tuple[DemoResult, str]) -> None:
    result, text = demo_run
    assert result.report("trace").tree is not None
    hops = [line.strip("└─│ ") for line in text.splitlines() if "CLIENT GET" in line or "SERVER GET" in line]
    assert [hop.split()[0] for hop in hops] == ["CLIENT", "SERVER"] * 3
    assert "→ productpage @ 127.0.0.1:19081" in hops[0]
    assert "→ reviews v2 @ 127.0.0.1:19182" in hops[2]
    assert "→ ratings @ 127.0.0.1:1919" in hops[4]


async def test_metrics_count_every_scene_with_response_flags(demo_run: tuple[DemoResult, str]) -> None:
    result, _ = demo_run
    table = rows(result, "metrics")
    by_flag: dict[str, int] = {}
    for _destination, _version, _code, flags, count in table:
        by_flag[flags] = by_flag.get(flags, 0) + int(count)
    assert by_flag["UO"] == 8
    assert by_flag["UT"] == int({r[0]: r for r in rows(result, "fault")}["reviews 504 UT"][2])
    assert any("FI" in flag for flag in by_flag)


async def test_cli_runs_a_scene_subset_and_rejects_unknown_names() -> None:
    code, text, err = await run_cli("demo", "--fast", "--scenes", "headers,breaker")
    assert code == 0, err
    assert "1. Header routing" in text and "2. Circuit breaking" in text and "Canary" not in text
    assert "all 3 claims held across 2 scenes" in text

    code, _, err = await run_cli("demo", "--scenes", "canary,nope")
    assert code == 2
    assert err.strip() == (
        "meshlib demo: unknown scene(s) nope; choose from canary, headers, fault, retries, outlier, breaker, trace, "
        "metrics"
    )


async def test_serve_keeps_services_and_admin_up_and_admin_attaches() -> None:
    async with serving_cli("demo", "--serve", "--admin-port", "0") as proc:
        assert proc.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(30):
            while not (lines and lines[-1].lstrip().startswith("admin")):
                lines.append((await proc.stdout.readline()).decode())
                assert lines[-1], "meshlib demo --serve ended early"
        assert lines[0].startswith("meshlib demo: serving bookinfo")
        admin_url = lines[-1].split()[1]
        code, text, err = await run_cli("admin", "--attach", admin_url, "--filter", "productpage.*rq_total$",
                                        timeout_s=30)
        assert code == 0, err
        assert ", LIVE, up " in text.splitlines()[0]
        assert "127.0.0.1:19182" in text  # the clusters with their hosts
        # The warm-up visits went through productpage: its cluster counted them.
        assert "cluster.outbound|9080||productpage.default.svc.cluster.local.upstream_rq_total: 2" in text
    assert proc.returncode == 0  # stopped by SIGTERM, cleanly
