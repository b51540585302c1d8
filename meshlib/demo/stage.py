"""What a demo scene works with (:class:`Stage`) and what it is (:class:`Scene`).

A scene is ``async def scene(stage: Stage) -> None``: it edits the Istio rules
(:meth:`Stage.rules`, hot reload), sends traffic (:meth:`Stage.visits`) and fills
``stage.report`` — table rows while traffic flows, then the claims it checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from meshlib.demo.bookinfo import Bookinfo, Visit
from meshlib.demo.config import SceneConfig
from meshlib.demo.render import SceneReport, Screen
from meshlib.mesh import Mesh

__all__ = ["ALL_TO", "CONCURRENCY", "RATINGS_CLUSTER", "REVIEWS_V2_CLUSTER", "Scene", "Stage"]

RATINGS_CLUSTER = "outbound|9080||ratings.default.svc.cluster.local"
REVIEWS_V2_CLUSTER = "outbound|9080|v2|reviews.default.svc.cluster.local"
CONCURRENCY = 10  # visits in flight at once, unless a scene says otherwise

#: A reviews rule sending everything to one subset, without retries (``.format(subset="v2")``).
ALL_TO = "- route: [{{destination: {{host: reviews, subset: {subset}}}}}]\n  retries: {{attempts: 0}}\n"


@dataclass
class Stage:
    """What a scene works with: the mesh, the services, the config directory, the screen and its report."""

    mesh: Mesh
    bookinfo: Bookinfo
    config: SceneConfig
    screen: Screen
    report: SceneReport
    requests: int  # traffic per step (smaller with --fast)
    ran: frozenset[str] = frozenset()  # the scenes of this run

    async def rules(self, rules: str) -> str:
        return await self.config.apply(self.mesh, rules)

    def cluster_stat(self, cluster: str, stat: str) -> int:
        value = self.mesh.stats()["clusters"].get(cluster, {}).get(stat, 0)
        return len(value) if isinstance(value, dict) else int(value)

    async def visits(self, count: int, user: str | None = None, *, concurrency: int = CONCURRENCY,
                     each: Callable[[Visit], None] | None = None) -> list[Visit]:
        """``count`` productpage visits, ``concurrency`` at a time; ``each`` sees every result as it lands."""
        results: list[Visit] = []
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                visit = await self.bookinfo.visit(user)
            results.append(visit)
            if each is not None:
                each(visit)
                self.screen.update(self.report)

        await asyncio.gather(*(one() for _ in range(count)))
        return results


@dataclass(frozen=True)
class Scene:
    """One scene: its ``--scenes`` name, title, table columns, the line introducing it, and the coroutine."""

    name: str
    title: str
    columns: tuple[str, ...]
    intro: str
    run: Callable[[Stage], Awaitable[None]]
