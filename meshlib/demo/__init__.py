"""``meshlib demo``: bookinfo on loopback, then what the mesh does, scene by scene.

::

    meshlib demo                      # every scene, ~15 s, exit 0 when each scene's claims held
    meshlib demo --scenes fault,trace # a subset (names: canary headers fault retries outlier breaker trace metrics)
    meshlib demo --serve              # keep the services and the admin page up for your own requests

The services (productpage → reviews v1/v2/v3 → ratings ×2) listen on the
loopback endpoints of the embedded default mesh (``Mesh.from_files()`` with no
argument), and every hop is a mesh-routed aiohttp call. Each scene edits the
Istio rules the way an operator would — a YAML file the mesh hot-reloads —
then sends traffic and checks the claim it makes (a canary's share, a header
route, a fault contained by a timeout, retries, outlier ejection and return,
a breaker's ``UO``, one request's trace, the Istio metrics). Randomness comes
from the mesh's seeded RNG.

In Python::

    exit_code = asyncio.run(run_demo(scenes=["canary", "trace"]))
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from meshlib.demo.bookinfo import PRODUCTPAGE, RATINGS, REVIEWS, Bookinfo
from meshlib.demo.config import SceneConfig, reviews_rules
from meshlib.demo.render import SceneReport, Screen
from meshlib.demo.scenes import SCENES, Scene, Stage
from meshlib.mesh import Mesh

__all__ = ["SCENES", "DemoResult", "Serving", "play", "print_serving", "run_demo", "scene_names", "serve_demo"]


def scene_names() -> list[str]:
    """The scene names, in the order they run."""
    return [scene.name for scene in SCENES]


@dataclass
class DemoResult:
    """Every scene's report; ``ok`` when every claim held."""

    reports: list[SceneReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.reports)

    def report(self, name: str) -> SceneReport:
        return next(r for r in self.reports if r.name == name)


def _select(names: Sequence[str] | None) -> list[Scene]:
    if not names:
        return list(SCENES)
    unknown = [n for n in names if n not in scene_names()]
    if unknown:
        raise ValueError(f"unknown scene(s) {', '.join(unknown)}; choose from {', '.join(scene_names())}")
    return [scene for scene in SCENES if scene.name in names]


async def play(
    scenes: Sequence[str] | None = None,
    *,
    requests: int = 100,
    seed: int = 7,
    file: IO[str] | None = None,
    force_terminal: bool | None = None,
) -> DemoResult:
    """Run the scenes and return their reports (``run_demo`` prints the verdict and maps it to an exit code)."""
    chosen = _select(scenes)
    screen = Screen(file, force_terminal=force_terminal)
    result = DemoResult()
    with tempfile.TemporaryDirectory(prefix="meshlib-demo-") as directory:
        config = SceneConfig(Path(directory))
        config.write(reviews_rules("- route: [{destination: {host: reviews, subset: v1}}]\n"))
        mesh = Mesh.from_files(directory, rng=random.Random(seed), poll_interval_s=0.02, workload_name="demo")
        mesh.enable_metrics()
        screen.line(f"meshlib demo: bookinfo on 127.0.0.1 — productpage :{PRODUCTPAGE}, reviews "
                    f"v1/v2/v3 :{'/'.join(str(p) for p in REVIEWS.values())}, ratings "
                    f":{RATINGS[0]}/:{RATINGS[1]}; every hop routed in process by meshlib", "bold")
        async with mesh, mesh.session() as http:
            bookinfo = Bookinfo(mesh, http)
            await bookinfo.start()
            try:
                ran = frozenset(scene.name for scene in chosen)
                for number, scene in enumerate(chosen, 1):
                    report = SceneReport(scene.name, scene.title, scene.columns)
                    screen.scene_start(number, report, scene.intro)
                    try:
                        await scene.run(Stage(mesh, bookinfo, config, screen, report, requests, ran))
                    finally:
                        screen.scene_end(report)
                    result.reports.append(report)
            finally:
                await bookinfo.stop()
    return result


async def run_demo(
    scenes: Sequence[str] | None = None,
    *,
    requests: int = 100,
    seed: int = 7,
    file: IO[str] | None = None,
) -> int:
    """Play the demo and print the verdict; 0 when every scene's claims held, else 1."""
    result = await play(scenes, requests=requests, seed=seed, file=file)
    screen = Screen(file)
    failed = [check.claim for report in result.reports for check in report.checks if not check.ok]
    screen.line()
    if failed:
        screen.line(f"meshlib demo: {len(failed)} claim(s) did NOT hold: " + "; ".join(failed), "bold red")
        return 1
    checks = sum(len(r.checks) for r in result.reports)
    screen.line(f"meshlib demo: all {checks} claims held across {len(result.reports)} scenes. "
                "Next: `meshlib demo --serve`, then the README's Use snippet or `meshlib admin --attach "
                "http://127.0.0.1:15000`.", "bold green")
    return 0


@dataclass(frozen=True)
class Serving:
    """Where ``serve_demo`` listens (given to ``on_ready``)."""

    admin_url: str
    productpage_url: str


async def serve_demo(
    *,
    admin_port: int = 15000,
    seed: int = 7,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Serving], None] | None = None,
    handle_signals: bool = False,
) -> None:
    """Keep the bookinfo services (embedded default mesh) and the admin page up until ``stop`` or a signal.

    The services route with the same rules ``Mesh.from_files()`` loads by
    default, so the README's "Use" snippet, run in another process, reaches them.
    """
    from meshlib.admin import start_admin

    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if handle_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
    mesh = Mesh.from_files(rng=random.Random(seed), workload_name="demo")
    mesh.enable_metrics()
    try:
        async with mesh, mesh.session() as http:
            bookinfo = Bookinfo(mesh, http)
            await bookinfo.start()
            try:
                admin = await start_admin(mesh, port=admin_port, stats_text=mesh.prometheus_text)
                try:
                    for user in (None, "jason"):  # a little traffic, so the admin page has numbers to show
                        await bookinfo.visit(user)
                    if on_ready is not None:
                        on_ready(Serving(admin.url, f"http://127.0.0.1:{PRODUCTPAGE}/productpage"))
                    await stop.wait()
                finally:
                    await admin.close()
            finally:
                await bookinfo.stop()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def print_serving(serving: Serving) -> None:
    """What ``meshlib demo --serve`` prints once it listens."""
    reviews = ", ".join(f"{v} :{p}" for v, p in REVIEWS.items())
    print(
        "meshlib demo: serving bookinfo on the embedded default mesh (Ctrl-C to stop)\n"
        f"  productpage  {serving.productpage_url}   (in the mesh: http://productpage:9080/productpage)\n"
        f"  reviews      {reviews} on 127.0.0.1   (http://reviews:9080/reviews/1)\n"
        f"  ratings      :{RATINGS[0]}, :{RATINGS[1]} on 127.0.0.1   (http://ratings:9080/ratings/1)\n"
        f"  admin        {serving.admin_url}   (also: meshlib admin --attach {serving.admin_url.rstrip('/')})",
        flush=True,
    )
