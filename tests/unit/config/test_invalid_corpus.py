"""The invalid-config corpus: each file under ``invalid/`` ends with the exact problems it must produce.

A file lists its expectations as trailing ``# expect: <problem>`` comment
lines (comments do not move the line numbers they refer to). The problems are
compared as full ``file:line: Kind ns/name: field: message`` strings, in order,
with the file named relative to this directory, as a user would pass it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlib.config import load_snapshot, validate_paths
from meshlib.errors import ConfigInvalid

HERE = Path(__file__).parent
CASES = sorted((HERE / "invalid").glob("*.yaml"))
WARNING_CASES = sorted((HERE / "warnings").glob("*.yaml"))


def _expected(path: Path) -> list[str]:
    prefix = "# expect: "
    return [line[len(prefix) :] for line in path.read_text().splitlines() if line.startswith(prefix)]


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_invalid_file_reports_exact_problems(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(HERE)
    relative = f"invalid/{path.name}"
    expected = _expected(path)
    assert expected, f"{relative} has no '# expect:' lines"
    assert [str(p) for p in validate_paths([relative])] == expected


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_invalid_file_is_rejected_by_load(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(HERE)
    with pytest.raises(ConfigInvalid) as info:
        load_snapshot([f"invalid/{path.name}"])
    assert [str(p) for p in info.value.problems] == _expected(path)


def test_whole_directory_collects_every_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(HERE)
    expected = sorted(e for path in CASES for e in _expected(path))
    found = validate_paths(["invalid"])
    # The corpus files reuse names on purpose (each is a case of its own): in one directory they are duplicates.
    duplicates = [p for p in found if p.field == "metadata.name" and p.message.startswith("duplicate ")]
    assert duplicates and all("already defined at invalid/" in p.message for p in duplicates)
    assert sorted(str(p) for p in found if p not in duplicates) == expected


@pytest.mark.parametrize("path", WARNING_CASES, ids=[p.stem for p in WARNING_CASES])
def test_warning_file_reports_exact_warnings_and_still_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Configuration Istio accepts (istioctl analyze findings): reported as warnings, and used."""
    monkeypatch.chdir(HERE)
    relative = f"warnings/{path.name}"
    expected = _expected(path)
    assert expected, f"{relative} has no '# expect:' lines"
    problems = validate_paths([relative])
    assert [str(p) for p in problems] == expected
    assert all(p.is_warning for p in problems)
    load_snapshot([relative])  # does not raise
