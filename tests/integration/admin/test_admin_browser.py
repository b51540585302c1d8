"""The debug page in headless Chromium: after its JS ran, the clusters and routes of the bookinfo mesh are shown.

Needs Debian's ``chromium`` (``/usr/bin/chromium``); ``.ci/run`` installs it. Without it the test
is skipped with that reason, so the README's test command passes on a fresh machine, except under CI
(``CI`` set, as ``.ci/run`` runs), where a missing browser fails the test rather than hiding it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

import meshlib
from meshlib.admin import AdminServer

from .conftest import EJECTED

REVIEWS = "reviews.default.svc.cluster.local"

# The flags known to work on this machine: without the background-networking ones
# Chromium's own connections are refused by the closed network.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium", path="/usr/bin")
    if found is None:
        reason = (
            "chromium is not installed: .ci/run installs it (apt-get update && apt-get install -y chromium); "
            "install it the same way to run the browser test"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


class Dom(HTMLParser):
    """The elements of a dumped DOM: each start tag's attributes, its enclosing row's, and element texts by id."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], dict[str, str]]] = []  # (tag, attrs, enclosing <tr> attrs)
        self.texts: dict[str, str] = {}
        self._row: dict[str, str] = {}
        self._open_ids: list[tuple[str, str]] = []  # (tag, id)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "tr":
            self._row = values
        self.elements.append((tag, values, self._row))
        if "id" in values:
            self._open_ids.append((tag, values["id"]))
            self.texts[values["id"]] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = {}
        if self._open_ids and self._open_ids[-1][0] == tag:
            self._open_ids.pop()

    def handle_data(self, data: str) -> None:
        for _, element_id in self._open_ids:
            self.texts[element_id] += data

    def rows(self, **attrs: str) -> list[dict[str, str]]:
        """``<tr>`` attribute dicts whose attributes include ``attrs`` (``data_route`` → ``data-route``)."""
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [a for tag, a, _ in self.elements if tag == "tr" and wanted.items() <= a.items()]


async def dump_dom(url: str, user_data_dir: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "--virtual-time-budget=5000",
        "--dump-dom", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail("chromium did not finish within 90 s")
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout.decode()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_debug_page_shows_clusters_and_routes(admin: AdminServer, mesh: meshlib.Mesh, tmp_path: Path) -> None:
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    dom = Dom()
    dom.feed(await dump_dom(admin.url, profile))

    assert dom.texts.get("version") == mesh.snapshot.version, "the page's JS did not render the status"
    assert not dom.texts.get("fetch-error"), dom.texts.get("fetch-error")

    # Cluster rows: one per cluster, the reviews subsets among them, each with its host row.
    clusters = {row["data-cluster"] for row in dom.rows() if "data-cluster" in row}
    assert clusters == set(mesh.snapshot.clusters)
    for subset, port in (("v1", 19181), ("v2", 19182), ("v3", 19183)):
        name = f"outbound|9080|{subset}|{REVIEWS}"
        assert dom.rows(data_cluster=name, id=f"cluster-{name}")
        [host] = dom.rows(data_cluster_host=f"{name}::127.0.0.1:{port}")
        assert host["data-health"] == ("failed_outlier_check" if f"127.0.0.1:{port}" == EJECTED else "healthy")

    # Route rows for VirtualService default/reviews, with the header rule and the 80/20 split.
    rules = [row["data-rule"] for row in dom.rows(data_route="default/reviews")]
    assert rules == ["jason-sees-v2", "canary-v3"]
    weights = {
        (row.get("data-rule"), a["data-destination"]): a["data-weight"]
        for tag, a, row in dom.elements if tag == "div" and "data-destination" in a
    }
    assert weights[("jason-sees-v2", f"outbound|9080|v2|{REVIEWS}")] == "100"
    assert weights[("canary-v3", f"outbound|9080|v1|{REVIEWS}")] == "80"
    assert weights[("canary-v3", f"outbound|9080|v3|{REVIEWS}")] == "20"
    assert 'headers[end-user] exact "jason"' in dom.texts[f"route-9080/{REVIEWS}:9080/0"]
