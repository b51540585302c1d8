"""Fuzzing the YAML loader end to end: mutated real configuration → located problems, never an exception.

``test_robustness`` replaces values in a parsed document; this one mutates
the *text* (so the YAML syntax, anchors, aliases, merge keys and indentation
are what breaks) and runs the whole file path: read, parse, validate,
cross-check, compile and encode to xDS for every client kind (whatever
validates must also be servable). The only exception allowed out is
:class:`~meshlib.errors.ConfigInvalid` (documented in :mod:`meshlib.errors`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlib.config import load_snapshot, validate_paths
from meshlib.errors import ConfigInvalid
from meshlib.xds import ClientKind, encode_resources
from tests.unit.config.test_robustness import FULL

FRAGMENTS = ["&a ", "*a", "<<: *a\n", "{", "}", "[", "]", ": ", "- ", "\n  ", "'", '"', "!!str ", "!!binary ", "~",
             "---\n", "...\n", "? ", "|\n", ">-\n", "%YAML 1.1\n", "\t", "\x00", "1e999", "0x", ":" * 3, "*"]


@st.composite
def _mutated_text(draw: st.DrawFn) -> str:
    text = FULL
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(("insert", "delete", "fragment")))
        if action == "insert":
            text = text[:at] + draw(st.text(max_size=8)) + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 40)) :]
        else:
            text = text[:at] + draw(st.sampled_from(FRAGMENTS)) + text[at:]
    return text


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(text=_mutated_text())
def test_mutated_configuration_text_only_yields_located_problems(tmp_path: Path, text: str) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    for problem in validate_paths([path]):
        assert problem.file == str(path)
        assert problem.message
    with contextlib.suppress(ConfigInvalid):
        snapshot = load_snapshot([path])
        for kind in ClientKind:  # whatever validates must also encode (the control plane serves it)
            encode_resources(snapshot, kind)
