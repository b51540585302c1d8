"""Hostile YAML: alias bombs, deep nesting, huge files — refused quickly with file:line, never a traceback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from meshlib.config import files, validate_paths
from meshlib.config import yaml_nodes as yn
from meshlib.config.yaml_nodes import parse_yaml


def billion_laughs(levels: int = 9, fan_out: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['lol'] * fan_out)}]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fan_out)}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_fast_with_the_line_of_the_alias() -> None:
    started = time.perf_counter()
    documents, errors = parse_yaml(billion_laughs())
    assert time.perf_counter() - started < 2.0  # 9**9 values if expanded; refused after ~10k
    assert documents == []
    (error,) = errors
    assert error.message == f"excessive YAML aliasing: more than {yn.MAX_ALIAS_NODES} values produced through aliases"
    assert 2 <= error.line <= 9


def test_alias_bomb_inside_a_kind_meshlib_ignores_is_still_refused(tmp_path: Path) -> None:
    bomb = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\ndata:\n" + "".join(
        f"  {line}\n" for line in billion_laughs().splitlines()
    )
    (tmp_path / "cm.yaml").write_text(bomb)
    (problem,) = validate_paths([tmp_path])
    assert problem.file.endswith("cm.yaml") and problem.line > 4
    assert "excessive YAML aliasing" in problem.message


def test_merge_key_bomb_is_counted_too() -> None:
    lines = ["b0: &b0 {k0: v, k1: v, k2: v, k3: v, k4: v, k5: v, k6: v, k7: v, k8: v, k9: v}"]
    for i in range(1, 6):
        keys = ", ".join(f"x{j}: *b{i - 1}" for j in range(10))
        lines.append(f"b{i}: &b{i} {{<<: *b{i - 1}, {keys}}}")
    _, errors = parse_yaml("\n".join(lines) + "\n")
    assert any("excessive YAML aliasing" in e.message for e in errors)


def test_reusing_an_anchor_on_every_endpoint_is_fine() -> None:
    text = "labels: &l {app: reviews, version: v1}\nendpoints:\n" + "".join(
        f"- {{address: 10.0.{i // 250}.{i % 250}, labels: *l}}\n" for i in range(8000)
    )
    documents, errors = parse_yaml(text)
    assert errors == []
    endpoints = documents[0].root.mapping["endpoints"].sequence  # type: ignore[union-attr]
    assert len(endpoints) == 8000
    assert endpoints[-1].mapping["labels"].mapping["version"].scalar == "v1"


def test_merge_keys_still_work_and_own_keys_win() -> None:
    documents, errors = parse_yaml("base: &b {x: 1, y: 2}\nuse: {<<: *b, y: 3}\n")
    assert errors == []
    use = documents[0].root.mapping["use"].mapping  # type: ignore[union-attr]
    assert (use["x"].scalar, use["y"].scalar) == (1, 3)


def test_recursive_alias_is_an_error_not_a_hang() -> None:
    _, errors = parse_yaml("a: &x [*x]\n")
    assert [e.message for e in errors] == ["recursive YAML alias"]


@pytest.mark.parametrize(
    "text",
    [
        "[" * 150 + "]" * 150,
        "a:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(150)),
    ],
    ids=["flow", "block"],
)
def test_deep_nesting_is_refused(text: str) -> None:
    _, errors = parse_yaml(text)
    assert [e.message for e in errors] == [f"YAML nested deeper than {yn.MAX_DEPTH} levels"]


def test_libyaml_flow_nesting_limit_is_a_syntax_error() -> None:
    _, errors = parse_yaml("[" * 20_000 + "]" * 20_000)
    assert len(errors) == 1 and errors[0].message.startswith("YAML syntax error")


def test_document_node_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yn, "MAX_DOCUMENT_NODES", 50)
    documents, errors = parse_yaml("small: [1, 2]\n---\nbig: [" + ", ".join(["x"] * 100) + "]\n")
    assert len(documents) == 1  # the first document is kept, the second refused
    assert errors == [yn.YamlError(3, "YAML document too large: more than 50 values")]


def test_file_node_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yn, "MAX_FILE_NODES", 30)
    _, errors = parse_yaml("".join(f"---\nd{i}: [a, b, c]\n" for i in range(20)))
    assert [e.message for e in errors] == ["YAML file too large: more than 30 values"]


def test_file_size_limit_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 1024 * 1024)
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 110_000)
    (problem,) = validate_paths([big])
    assert str(problem) == f"{big}: file too large: more than 1 MiB"


def test_plain_scalars_are_typed_like_the_safe_loader() -> None:
    documents, errors = parse_yaml(
        "a: 80\nb: '80'\nc: true\nd: 1.5\ne: ~\nf: 2001:db8::1\ng: 0x1F\nh: !!str 7\ni: .inf\nj: v1\nk: ''\n"
        "l: 1:2:3:4:5:6:7:8\nm: 10:30\n"
    )
    assert errors == []
    root = documents[0].root.mapping  # type: ignore[union-attr]
    values = {k: v.scalar for k, v in root.items()}
    assert values == {
        "a": 80, "b": "80", "c": True, "d": 1.5, "e": None, "f": "2001:db8::1", "g": 31, "h": "7",
        "i": float("inf"), "j": "v1", "k": "", "l": "1:2:3:4:5:6:7:8", "m": "10:30",
    }


def test_many_documents_without_aliases_are_not_mistaken_for_aliasing() -> None:
    # Object ids of one document's (freed) nodes are reused by the next document's.
    text = "---\n".join(
        f"kind: K\nmetadata: {{name: s{i}}}\nspec:\n  endpoints:\n"
        + "".join(f"  - {{address: 10.0.{i}.{e}, labels: {{v: v{e % 2}}}}}\n" for e in range(100))
        for i in range(60)
    )
    documents, errors = parse_yaml(text)
    assert errors == []
    assert len(documents) == 60
