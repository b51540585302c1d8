"""Istio YAML applied on top of a Consul-sourced mesh (``Mesh.from_consul(overlay=...)``), hot-reloaded.

The files are polled by (mtime, size) like the file source; an edit that does
not validate is reported in ``problems`` and the last good resources stay.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

from meshlib.config.files import config_file_set, read_resources
from meshlib.config.istio_types import IstioResource
from meshlib.errors import ConfigInvalid, ConfigProblem

__all__ = ["OverlayFiles"]

log = logging.getLogger("meshlib.consul")


class OverlayFiles:
    """Istio YAML applied on top of Consul's configuration; hot-reloaded, last good kept."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [str(p) for p in paths]
        self.resources: list[IstioResource] = []
        self.problems: list[ConfigProblem] = []
        self.version = 0
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()

    def _stat(self) -> tuple[tuple[str, int, int], ...]:
        entries = []
        for path in config_file_set(self.paths):
            with contextlib.suppress(OSError):
                st = path.stat()
                entries.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(entries)

    def load(self) -> None:
        """Read now; raises :class:`ConfigInvalid` when the files do not validate."""
        fingerprint = self._stat()
        resources, problems = read_resources(self.paths)
        if problems:
            raise ConfigInvalid(problems)
        self._fingerprint = fingerprint
        self.resources = resources
        self.problems = []
        self.version += 1

    def reload_if_changed(self) -> bool:
        """Re-read after an edit; True when a valid edit replaced the resources."""
        fingerprint = self._stat()
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        try:
            self.load()
        except ConfigInvalid as exc:
            self.problems = exc.problems
            log.error("overlay edit rejected; the last good overlay stays in force:\n%s", exc)
            return False
        return True
