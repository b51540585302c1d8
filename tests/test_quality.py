"""Project-wide gates that belong in the one test command: lint, types, public API."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import meshlib

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: install the lint dependency group (see README)")
    return found


def test_ruff_clean() -> None:
    result = subprocess.run(
        [_tool("ruff"), "check", "meshlib", "tests", "bench", "examples"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_clean() -> None:
    result = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_api_is_curated() -> None:
    assert sorted(meshlib.__all__) == ["ConfigInvalid", "ConfigProblem", "Mesh", "MeshError", "peer_identity"]
    for name in meshlib.__all__:
        assert getattr(meshlib, name).__module__.startswith("meshlib.")
