from __future__ import annotations

from meshlib.balancing import (
    effective_locality_weight,
    layout_endpoints,
    locality_failover_priority,
    locality_matches,
)
from meshlib.config.model import (
    Endpoint,
    Labels,
    LbPolicy,
    Locality,
    LocalityDistribute,
    LocalityFailover,
    LocalityLbSetting,
)

CLIENT = Locality("us-east", "a", "s1")


def _ep(n: int, locality: str, labels: dict[str, str] | None = None, weight: int = 1) -> Endpoint:
    return Endpoint(
        f"10.0.0.{n}", 80, weight=weight, locality=Locality.parse(locality), labels=Labels(labels or {})
    )


def _levels(eps: list[Endpoint], lb: LbPolicy, labels: dict[str, str] | None = None) -> list[list[int]]:
    layout = layout_endpoints(eps, lb, CLIENT, Labels(labels or {}))
    return [sorted(layout.level_members(i)) for i in range(len(layout.levels))]


def test_failover_priority_relative_to_client() -> None:
    assert locality_failover_priority(CLIENT, Locality("us-east", "a", "s1")) == 0
    assert locality_failover_priority(CLIENT, Locality("us-east", "a", "s2")) == 1
    assert locality_failover_priority(CLIENT, Locality("us-east", "b", "s1")) == 2
    assert locality_failover_priority(CLIENT, Locality("eu-west", "a", "s1")) == 3


def test_locality_patterns() -> None:
    loc = Locality("us-east", "a", "s1")
    assert locality_matches(loc, "us-east")
    assert locality_matches(loc, "us-east/a")
    assert locality_matches(loc, "us-east/*")
    assert locality_matches(loc, "*")
    assert locality_matches(loc, "us-east/a/s1")
    assert not locality_matches(loc, "us-east/b/*")
    assert not locality_matches(loc, "eu-west/*")


def test_effective_locality_weight_overprovisioning() -> None:
    assert effective_locality_weight(10, 10, 10) == 10
    assert effective_locality_weight(10, 8, 10) == 10  # 1.4 * 0.8 ≥ 1
    assert effective_locality_weight(10, 5, 10) == 7.0
    assert effective_locality_weight(10, 0, 10) == 0.0


def test_no_failover_without_outlier_detection() -> None:
    eps = [_ep(1, "us-east/a/s1"), _ep(2, "eu-west/a/s1")]
    layout = layout_endpoints(eps, LbPolicy(), CLIENT)
    assert len(layout.levels) == 1
    assert not layout.locality_weighted


def test_default_failover_levels_are_compacted() -> None:
    eps = [_ep(1, "eu-west/x/y"), _ep(2, "us-east/a/s2"), _ep(3, "us-east/b/s1"), _ep(4, "us-east/a/s2")]
    # No same-subzone endpoints: priorities 1, 2, 3 become levels 0, 1, 2.
    assert _levels(eps, LbPolicy(failover_enabled=True)) == [[1, 3], [2], [0]]


def test_failover_disabled_by_setting() -> None:
    eps = [_ep(1, "eu-west/x/y"), _ep(2, "us-east/a/s1")]
    lb = LbPolicy(failover_enabled=True, locality=LocalityLbSetting(enabled=False))
    assert _levels(eps, lb) == [[0, 1]]


def test_failover_from_to_demotes_other_regions() -> None:
    eps = [_ep(1, "eu-west/x/y"), _ep(2, "ap-south/x/y"), _ep(3, "us-east/a/s1")]
    lb = LbPolicy(
        failover_enabled=True, locality=LocalityLbSetting(failover=(LocalityFailover("us-east", "ap-south"),))
    )
    assert _levels(eps, lb) == [[2], [1], [0]]  # same subzone, then ap-south (3), then eu-west (4)


def test_failover_priority_labels() -> None:
    client_labels = {"net": "n1", "tier": "gold"}
    eps = [
        _ep(1, "eu-west/x/y", {"net": "n1", "tier": "gold"}),  # all match → 0
        _ep(2, "us-east/a/s1", {"net": "n1", "tier": "bronze"}),  # first mismatch at j=1 → 2-1 = 1
        _ep(3, "us-east/a/s1", {"net": "n2", "tier": "gold"}),  # mismatch at j=0 → 2
    ]
    lb = LbPolicy(failover_enabled=True, locality=LocalityLbSetting(failover_priority=("net", "tier")))
    assert _levels(eps, lb, client_labels) == [[0], [1], [2]]


def test_failover_priority_label_override_and_topology_labels() -> None:
    eps = [_ep(1, "eu-west/x/y", {"tier": "gold"}), _ep(2, "us-east/b/z", {"tier": "silver"})]
    lb = LbPolicy(
        failover_enabled=True,
        locality=LocalityLbSetting(failover_priority=("topology.kubernetes.io/region", "tier=silver")),
    )
    # ep 2: region matches (derived from locality), tier matches override → 0;
    # ep 1: region differs → 2.
    assert _levels(eps, lb, {"tier": "gold"}) == [[1], [0]]


def test_distribute_weights_and_drops_unlisted_localities() -> None:
    eps = [
        _ep(1, "us-east/a/s1"),
        _ep(2, "us-east/a/s1"),
        _ep(3, "us-east/b/s1", weight=3),
        _ep(4, "us-east/c/s1"),
        _ep(5, "eu-west/x/y"),
    ]
    lb = LbPolicy(
        locality=LocalityLbSetting(
            distribute=(LocalityDistribute("us-east/a/*", {"us-east/a/*": 70, "us-east/b/*": 30}),)
        )
    )
    layout = layout_endpoints(eps, lb, CLIENT)
    assert layout.locality_weighted
    (level,) = layout.levels
    assert {str(g.locality): g.weight for g in level} == {"us-east/a/s1": 70.0, "us-east/b/s1": 30.0}


def test_distribute_wildcard_splits_by_locality_weight() -> None:
    eps = [_ep(1, "us-east/a/s1"), _ep(2, "us-east/b/s1", weight=3)]
    lb = LbPolicy(locality=LocalityLbSetting(distribute=(LocalityDistribute("*", {"us-east/*": 100}),)))
    (level,) = layout_endpoints(eps, lb, CLIENT).levels
    assert [g.weight for g in level] == [25.0, 75.0]  # ceil(1*100/4), ceil(3*100/4)


def test_distribute_not_matching_client_changes_nothing() -> None:
    eps = [_ep(1, "us-east/a/s1"), _ep(2, "eu-west/x/y")]
    lb = LbPolicy(
        locality=LocalityLbSetting(distribute=(LocalityDistribute("eu-west/*", {"eu-west/*": 100}),))
    )
    (level,) = layout_endpoints(eps, lb, CLIENT).levels
    assert [g.weight for g in level] == [1.0, 1.0]
