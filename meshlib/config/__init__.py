"""Configuration: Istio YAML → validated → the frozen :mod:`meshlib.config.model`.

Pipeline (one concern per module):

- :mod:`~meshlib.config.files` — which files, reading them; the public entry points
- :mod:`~meshlib.config.yaml_nodes` — YAML trees that remember line numbers
- :mod:`~meshlib.config.documents` — which documents count; metadata; dispatch by kind
- ``parse_*`` — per-kind field validation (unknown fields, types, ranges, regexes), following
  Istio's ``pkg/config/validation`` (:mod:`istio_checks` holds the shared rules,
  :mod:`regex` the RE2 checks, :mod:`durations` the duration grammar and bounds)
- :mod:`~meshlib.config.compile` — cross-resource checks and compilation to a MeshSnapshot
  (:mod:`registry`, :mod:`clusters`, :mod:`routes`, :mod:`references`, :mod:`sidecar_scope`)
"""

from meshlib.config.compile import compile_snapshot
from meshlib.config.files import config_file_set, load_snapshot, read_resources, validate_paths

__all__ = ["compile_snapshot", "config_file_set", "load_snapshot", "read_resources", "validate_paths"]
