"""Reload guards: an emptied config is suspect, versions come from content, duplicates and ignored kinds."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlib.config import validate_paths
from meshlib.config.model import MeshSnapshot, WorkloadIdentity
from meshlib.discovery.files import FileConfigSource
from meshlib.errors import ConfigInvalid

SE = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
"""
EMPTY_MARKER = "apiVersion: meshlib.io/v1\nkind: EmptyMesh\n"


def _source(*paths: Path, allow_empty: bool = False) -> FileConfigSource:
    published: list[MeshSnapshot] = []
    return FileConfigSource(list(paths), WorkloadIdentity(), published.append, allow_empty_reload=allow_empty)


@pytest.mark.parametrize("emptied", ["", "# nothing left\n", "---\n", "apiVersion: v1\nkind: ConfigMap\n"])
def test_reload_that_empties_everything_is_refused_and_explained(tmp_path: Path, emptied: str) -> None:
    cfg = tmp_path / "mesh.yaml"
    cfg.write_text(SE)
    source = _source(cfg)
    assert len(source.load().services) == 1
    cfg.write_text(emptied)
    with pytest.raises(ConfigInvalid) as info:
        source.load()
    (problem,) = info.value.problems
    assert "refusing a reload that removes every service and route (1 service(s)" in problem.message
    assert "kind: EmptyMesh" in problem.message


def test_empty_marker_or_flag_accepts_an_empty_config(tmp_path: Path) -> None:
    cfg = tmp_path / "mesh.yaml"
    cfg.write_text(SE)
    source = _source(cfg)
    source.load()
    cfg.write_text(EMPTY_MARKER)
    assert len(source.load().services) == 0
    cfg.write_text(SE)
    flagged = _source(cfg, allow_empty=True)
    flagged.load()
    cfg.write_text("")
    assert len(flagged.load().services) == 0


def test_an_empty_start_is_fine(tmp_path: Path) -> None:
    cfg = tmp_path / "mesh.yaml"
    cfg.write_text("")
    assert len(_source(cfg).load().services) == 0


def test_version_depends_on_content_not_on_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "mesh.yaml").write_text(SE)
    (tmp_path / "b" / "other-name.yaml").write_text(SE)
    monkeypatch.chdir(tmp_path)
    versions = {
        _source(Path("a")).load().version,
        _source(tmp_path / "a").load().version,
        _source(Path("a/../a/mesh.yaml")).load().version,
        _source(tmp_path / "b").load().version,
    }
    assert len(versions) == 1
    (tmp_path / "b" / "other-name.yaml").write_text(SE + "# edited\n")
    assert _source(tmp_path / "b").load().version not in versions


def test_duplicate_kind_namespace_name_is_rejected_with_both_locations(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(SE)
    (tmp_path / "b.yaml").write_text("# second copy\n" + SE.replace("127.0.0.1", "127.0.0.2"))
    (problem,) = validate_paths([tmp_path])
    assert str(problem) == (
        f"{tmp_path}/b.yaml:2: ServiceEntry default/reviews: metadata.name: duplicate ServiceEntry "
        f"default/reviews: already defined at {tmp_path}/a.yaml:1 (Kubernetes keeps one object per kind, "
        "namespace and name)"
    )
    # Same name, other namespace or other kind: not a duplicate.
    (tmp_path / "b.yaml").write_text(SE.replace("{name: reviews}", "{name: reviews, namespace: prod}"))
    assert validate_paths([tmp_path]) == []


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [
        ("networking.istio.io/v1alpha3", "EnvoyFilter"),
        ("networking.istio.io/v1beta1", "ProxyConfig"),
        ("networking.istio.io/v1", "WorkloadGroup"),
        ("telemetry.istio.io/v1", "Telemetry"),
        ("extensions.istio.io/v1alpha1", "WasmPlugin"),
    ],
)
def test_proxy_level_kinds_are_ignored_with_a_warning(tmp_path: Path, api_version: str, kind: str) -> None:
    (tmp_path / "x.yaml").write_text(f"apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: x}}\nspec: {{}}\n")
    (tmp_path / "se.yaml").write_text(SE)
    (warning,) = validate_paths([tmp_path])
    assert warning.is_warning
    assert str(warning) == (
        f"{tmp_path}/x.yaml:2: {kind} default/x: kind: warning: {api_version} {kind} is ignored by meshlib "
        "(it configures the proxy, not traffic)"
    )
    assert len(_source(tmp_path).load().services) == 1


def test_unchanged_files_are_not_parsed_again(tmp_path: Path) -> None:
    from meshlib.config import read_resources

    (tmp_path / "a.yaml").write_text(SE)
    (tmp_path / "b.yaml").write_text(SE.replace("reviews", "ratings"))
    first, _ = read_resources([tmp_path])
    (tmp_path / "b.yaml").write_text(SE.replace("reviews", "details"))
    second, _ = read_resources([tmp_path])
    assert second[0] is first[0]  # a.yaml: the same parsed resource, reused
    assert second[1] is not first[1] and second[1].meta.name == "details"
