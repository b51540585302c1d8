"""The discovery-chain compiler against the four worked examples of Consul's discovery-chain.mdx."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from meshlib.discovery.consul.chain import discovery_chain_response

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(GOLDEN.glob("*.json"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_documented_example(path: Path) -> None:
    case: dict[str, Any] = json.loads(path.read_text())
    got = discovery_chain_response(
        case["service"], case["config_entries"], datacenter=case["compile_dc"],
        trust_domain=case["trust_domain"], overrides=case["overrides"],
    )
    expected = case["expected"]
    if "CustomizationHash" in expected["Chain"]:
        # Consul's value is a hashstructure digest of its Go struct; ours is our own 8-hex digest.
        assert len(got["Chain"].pop("CustomizationHash")) == 8
        expected["Chain"].pop("CustomizationHash")
    assert got == expected


def test_four_examples_present() -> None:
    assert len(CASES) == 4
