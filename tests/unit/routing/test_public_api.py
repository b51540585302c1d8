from __future__ import annotations

from meshlib import routing


def test_all_is_curated_and_resolvable() -> None:
    assert sorted(routing.__all__) == sorted(set(routing.__all__))
    for name in routing.__all__:
        obj = getattr(routing, name)
        if name != "RequestPredicate":  # a type alias, defined in meshlib.routing.match
            assert obj.__module__.startswith("meshlib.routing"), name
