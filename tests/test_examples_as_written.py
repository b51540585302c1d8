"""Each top-level example in examples/README.md runs as that README says — `python examples/<name>.py` —
from the repository root, to a clean exit (the other example tests import them and check what they show)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LISTED = re.findall(r"^- `(\w+\.py)`", (ROOT / "examples" / "README.md").read_text(), re.MULTILINE)


def test_the_readme_lists_examples() -> None:
    assert {"canary_split.py", "explain_decision.py"} <= set(LISTED)


@pytest.mark.parametrize("name", LISTED)
def test_example_runs_as_written(name: str) -> None:
    result = subprocess.run(
        [sys.executable, f"examples/{name}"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip()
    assert "Traceback" not in result.stderr
