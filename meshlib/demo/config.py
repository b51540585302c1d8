"""The demo's configuration: the embedded ServiceEntries plus, per scene, Istio rules written to a file.

Scenes change behaviour the way an operator would: by editing Istio YAML.
:class:`SceneConfig` keeps a directory with ``services.yaml`` (the embedded
default mesh's ServiceEntries) and ``rules.yaml``; :meth:`SceneConfig.apply`
rewrites ``rules.yaml`` and waits for the mesh's hot reload to take it, and
fails loudly if the mesh rejected it (a demo must not show stale rules).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Final

import yaml

from meshlib.mesh import Mesh, default_config_path

__all__ = ["SceneConfig", "reviews_rules", "service_entries_yaml"]

REVIEWS_SUBSETS: Final = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"""

RATINGS_LEGACY_REWRITE: Final = """\
  - name: legacy-api
    match: [{uri: {prefix: /v0/ratings}}]
    rewrite: {uri: /ratings}
    route: [{destination: {host: ratings}}]
"""


def service_entries_yaml() -> str:
    """The ServiceEntries of the embedded default mesh (bookinfo on loopback), as YAML."""
    documents = []
    for path in sorted(default_config_path().glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "ServiceEntry"]
    return yaml.safe_dump_all(documents, sort_keys=False)


def _document(text: str) -> str:
    return "---\n" + textwrap.dedent(text).strip("\n") + "\n"


def reviews_rules(route_block: str, *, ratings_policy: str = "", ratings_route: str = "") -> str:
    """``rules.yaml`` for a scene: the reviews subsets, a reviews VirtualService with ``route_block``
    (its ``http:`` list), a ratings DestinationRule with ``ratings_policy`` (its ``trafficPolicy``
    body) and a ratings VirtualService whose default rule gets ``ratings_route`` (extra rule fields).
    """
    ratings_dr = "spec:\n  host: ratings\n"
    if ratings_policy:
        ratings_dr += "  trafficPolicy:\n" + textwrap.indent(textwrap.dedent(ratings_policy).strip("\n"), "    ") + "\n"
    default_rule = "  - name: default\n    route: [{destination: {host: ratings}}]\n"
    if ratings_route:
        default_rule += textwrap.indent(textwrap.dedent(ratings_route).strip("\n"), "    ") + "\n"
    parts = [
        REVIEWS_SUBSETS,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\n"
        "spec:\n  hosts: [reviews]\n  http:\n" + textwrap.indent(textwrap.dedent(route_block).strip("\n"), "  ") + "\n",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings, namespace: default}\n"
        + ratings_dr,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings, namespace: default}\n"
        "spec:\n  hosts: [ratings]\n  http:\n" + RATINGS_LEGACY_REWRITE + default_rule,
    ]
    return "".join(_document(part) for part in parts)


class SceneConfig:
    """A config directory the demo's mesh watches; :meth:`apply` swaps the rules and waits for the reload."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        (directory / "services.yaml").write_text(service_entries_yaml())
        self.rules = directory / "rules.yaml"

    def write(self, rules: str) -> None:
        """Write ``rules.yaml`` atomically (the watcher never reads half a file)."""
        staging = self.directory / "rules.yaml.tmp"  # not a .yaml name: the loader ignores it
        staging.write_text(rules)
        os.replace(staging, self.rules)

    async def apply(self, mesh: Mesh, rules: str) -> str:
        """Write ``rules`` and wait until ``mesh`` runs them; returns the new config version."""
        attempts = mesh.reload_attempts
        self.write(rules)
        await mesh.wait_for_reload(attempts, timeout_s=5.0)
        errors = mesh.status()["last_error"]
        if errors:
            raise RuntimeError("meshlib demo: the scene's rules were rejected:\n" + "\n".join(errors))
        return mesh.snapshot.version
