"""The meshlib exception tree.

::

    MeshError                      base of everything meshlib raises
    ├── ConfigInvalid              configuration rejected; ``.problems`` lists every
    │                              :class:`ConfigProblem` (file:line: Kind ns/name: field: message)
    ├── NoRouteError               (raised only by APIs that cannot answer a local 404)
    └── MeshNotStarted             the mesh was used outside ``async with mesh``

Requests that fail inside the mesh are answered locally the way an Envoy
sidecar would answer them (404 no route, 502 REGISTRY_ONLY, 503 no healthy
upstream, 503 ``NC`` for a route to a cluster that does not exist) rather
than raised, so application code sees ordinary responses.

Problems have a severity. Errors reject the configuration; warnings (the
findings ``istioctl analyze`` reports for configuration Istio accepts, with
its codes, e.g. ``IST0101`` for a destination host or subset that does not
exist) are reported by ``meshlib validate`` (which fails on them only with
``--strict``) and logged on load, and the configuration is used.

What parsers raise, and nothing else (the fuzz tests hold them to it):

- YAML files (:func:`meshlib.config.read_resources`, ``load_snapshot``,
  ``Mesh.from_files``): never raise for bad content; every problem is a
  :class:`ConfigProblem`, and ``load_snapshot`` raises :class:`ConfigInvalid`.
- xDS resources (:mod:`meshlib.xds` ``decode_*``): raise
  :class:`meshlib.xds.XdsDecodeError` (a :class:`MeshError`) naming the
  resource and field; the client NACKs with that text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One configuration error, located precisely.

    ``str()`` gives ``file:line: Kind namespace/name: field.path: message``,
    e.g. ``mesh/reviews.yaml:23: VirtualService default/reviews:
    spec.http[1].route[0].weight: must be between 0 and 100``.
    """

    file: str
    line: int
    kind: str
    name: str  # "namespace/name", or "" when the document has none
    field: str  # dotted path with [i] indices, or "" for the whole document
    message: str
    severity: str = "error"  # "error" | "warning"
    code: str = ""  # Istio analyzer code of a warning (IST0101, ...), "" when none

    @property
    def is_warning(self) -> bool:
        """True for a warning (the configuration is still used)."""
        return self.severity == "warning"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        subject = f"{self.kind} {self.name}".strip()
        parts = [where]
        if subject:
            parts.append(subject)
        if self.field:
            parts.append(self.field)
        if self.is_warning:
            parts.append(f"warning {self.code}: {self.message}" if self.code else f"warning: {self.message}")
        else:
            parts.append(self.message)
        return ": ".join(parts)


class MeshError(Exception):
    """Base class of meshlib errors."""


class ConfigInvalid(MeshError):
    """Configuration was rejected. ``problems`` holds every error found, in file order."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid mesh configuration ({len(problems)} error(s)):\n{lines}")


class NoRouteError(MeshError):
    """No route matched (for APIs that cannot answer a local 404)."""


class MeshNotStarted(MeshError):
    """The mesh was used outside ``async with mesh``."""
