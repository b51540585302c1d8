from __future__ import annotations

from meshlib import balancing


def test_all_is_curated_and_resolvable() -> None:
    assert sorted(balancing.__all__, key=str.lower) == sorted(set(balancing.__all__), key=str.lower)
    for name in balancing.__all__:
        assert getattr(balancing, name) is not None
