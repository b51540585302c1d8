"""Earliest-deadline-first scheduling, the weighted core of several pickers.

Envoy's ``EdfScheduler``: every entry has a deadline; a pick takes the entry
with the earliest deadline, advances the virtual clock to it, and re-inserts
the entry at ``virtual_now + 1/weight``. Over time each entry is chosen in
proportion to its weight, and, unlike "smooth weighted round robin", the
re-insert weight may change per pick — least request uses that to fold live
load into the weight. Ties break by insertion order (an increasing sequence
number), which makes sequences exact and testable.

Used by weighted round robin, weighted least request and locality selection.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

__all__ = ["EdfScheduler"]


class EdfScheduler:
    """EDF over indices ``0..len(weights)-1``; weights must be positive.

    Two-step API (:meth:`next_index` then :meth:`readd`) instead of a weight
    callback, so callers that recompute the weight (least request) do not
    allocate a closure per pick.
    """

    __slots__ = ("_heap", "_now", "_seq", "_weights")

    def __init__(self, weights: Sequence[float]) -> None:
        if any(w <= 0 for w in weights):
            raise ValueError("EDF weights must be positive")
        self._weights = tuple(float(w) for w in weights)
        self._now = 0.0
        # Initial deadlines are 1/weight from virtual time 0, inserted in order.
        self._heap: list[tuple[float, int, int]] = [(1.0 / w, i, i) for i, w in enumerate(self._weights)]
        heapq.heapify(self._heap)
        self._seq = len(self._weights)

    def __len__(self) -> int:
        return len(self._weights)

    def pick(self) -> int:
        """Pick the earliest deadline and re-add it with its configured weight."""
        deadline, _, index = self._heap[0]
        self._now = deadline
        seq = self._seq
        self._seq = seq + 1
        # heapreplace: one sift instead of pop + push.
        heapq.heapreplace(self._heap, (deadline + 1.0 / self._weights[index], seq, index))
        return index

    def next_index(self) -> int:
        """Remove and return the earliest entry; the caller must :meth:`readd` it."""
        deadline, _, index = heapq.heappop(self._heap)
        self._now = deadline
        return index

    def readd(self, index: int, weight: float) -> None:
        """Re-insert ``index`` (taken by :meth:`next_index`) with ``weight`` from now."""
        seq = self._seq
        self._seq = seq + 1
        heapq.heappush(self._heap, (self._now + 1.0 / weight, seq, index))
