"""Random, Envoy's ``RANDOM``: uniform over the available hosts, weights ignored.

Envoy's random balancer ignores endpoint weights, and so does this one. It
needs no state, so it is the cheapest picker and a useful baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshlib.balancing.context import PickContext
from meshlib.config.model import Endpoint

__all__ = ["RandomPicker"]


class RandomPicker:
    __slots__ = ("_hosts", "_size")

    def __init__(self, hosts: Sequence[Endpoint]) -> None:
        if not hosts:
            raise ValueError("a picker needs at least one host")
        self._hosts = tuple(hosts)
        self._size = len(self._hosts)

    def pick(self, ctx: PickContext) -> Endpoint:
        # int(random() * n) instead of randrange(n): one C call, no Python-level
        # rejection loop; the bias is below 2**-40 for any realistic n.
        return self._hosts[int(ctx.rng.random() * self._size)]
