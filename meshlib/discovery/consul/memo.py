"""Reuse of work between compiles while Consul's answers are the same objects.

The Consul source republishes a service's health entries (or a kind's config
entries) only when they changed, and keeps the previous list object
otherwise. Keying cached results by that object's *identity* (checked with
``is``, the object itself held so its id cannot be reused) makes a recompile
after one instance's health flip redo the work for that one service only.
The cached inputs must not be mutated in place — a ``ConsulState`` is a
value, and its lists are treated as immutable.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class IdentityCache(Generic[V]):
    """``key → (source object, value)``; a hit needs the very same source object."""

    __slots__ = ("_items", "_limit")

    def __init__(self, limit: int = 100_000) -> None:
        self._items: dict[Hashable, tuple[object, V]] = {}
        self._limit = limit

    def get(self, key: Hashable, source: object) -> V | None:
        item = self._items.get(key)
        if item is not None and item[0] is source:
            return item[1]
        return None

    def put(self, key: Hashable, source: object, value: V) -> V:
        if len(self._items) >= self._limit and key not in self._items:
            self._items.clear()  # bounded: a burst of names starts over rather than growing
        self._items[key] = (source, value)
        return value

    def clear(self) -> None:
        self._items.clear()
