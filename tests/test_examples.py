"""The examples and docstring examples run and show what they claim."""

from __future__ import annotations

import doctest
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

import meshlib.mesh

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.asyncio
async def test_canary_split_example() -> None:
    seen = await _load("canary_split").main()
    assert seen["jason → v2"] == 20
    assert 150 <= seen["anonymous → v1"] <= 200  # 90% of 200, generous bounds


def test_explain_example() -> None:
    decision = _load("explain_decision").main()
    assert decision["route"]["rule"] == "jason-sees-v2"  # type: ignore[index]


@pytest.mark.asyncio
async def test_workload_identity_example() -> None:
    result = await _load("workload_identity").main()
    assert result["status"] == 200
    assert result["caller"] == "spiffe://cluster.local/ns/default/sa/productpage"
    assert "PERMISSION_DENIED" in result["refused"]


@pytest.mark.asyncio
async def test_consul_canary_example() -> None:
    seen = await _load("consul_canary").main()
    assert seen["x-canary → v2"] == 20
    assert 160 <= seen["anonymous → v1"] <= 199  # 90% of 200, generous bounds
    assert seen["after maintenance → v1"] == 60  # v2 drained: its share and the canary fail over to v1


def test_docstring_examples() -> None:
    result = doctest.testmod(meshlib.mesh)
    assert result.attempted >= 1 and result.failed == 0
