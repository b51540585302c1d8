"""Istio YAML files as a configuration source, hot-reloaded.

The source polls the files' (mtime, size) fingerprints — a directory is
re-listed on every poll, so added and removed files count — and rebuilds the
snapshot when anything moved. Polling keeps meshlib free of a filesystem-event
dependency and costs a few ``stat`` calls per interval; the default interval
(0.25 s) puts an edit in force well within the one-second target.

An edit that does not validate is reported (logged, and kept in
:attr:`FileConfigSource.last_problems` for ``mesh.status()``) and the last
good snapshot stays in force.

An edit that validates but would remove every service and every route at
once — what an emptied or truncated file, or a writer that replaces files
non-atomically, looks like mid-write — is treated the same way: refused,
with the reason in ``last_problems``, until the configuration says it means
it (a document ``apiVersion: meshlib.io/v1``, ``kind: EmptyMesh``) or the
source was built with ``allow_empty_reload=True``. The next poll that sees
the files change again retries.

Parsing runs in a worker thread, and the YAML reader bounds its work
(:mod:`meshlib.config.yaml_nodes`), so a hostile edit cannot stall the event
loop. The version of a configuration is a hash of its files' contents only:
the same YAML has the same version whichever path it was reached by.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from meshlib.config import compile_snapshot, config_file_set, read_resources
from meshlib.config.compile import reference_problems
from meshlib.config.istio_types import EmptyMeshMarker
from meshlib.config.model import MeshSnapshot, WorkloadIdentity
from meshlib.errors import ConfigInvalid, ConfigProblem

log = logging.getLogger("meshlib.config")

Fingerprint = tuple[tuple[str, int, int], ...]


def _fingerprint(paths: Sequence[str | Path]) -> Fingerprint:
    entries = []
    for path in config_file_set(paths):
        try:
            st = path.stat()
        except OSError:
            continue  # vanished between listing and stat: the next poll sees it gone
        entries.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(entries)


def _content_version(paths: Sequence[str | Path]) -> str:
    """A hash of the files' contents, in load order (their names do not count)."""
    digest = hashlib.sha256()
    for path in config_file_set(paths):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:12]


def _content_size(snapshot: MeshSnapshot) -> tuple[int, int]:
    """(services, routes) a snapshot carries."""
    routes = sum(len(vh.routes) for rc in snapshot.route_configs.values() for vh in rc.virtual_hosts)
    return len(snapshot.services), routes


class FileConfigSource:
    """Loads Istio YAML from ``paths`` and republishes it whenever the files change."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        workload: WorkloadIdentity,
        publish: Callable[[MeshSnapshot], None],
        *,
        poll_interval_s: float = 0.25,
        allow_empty_reload: bool = False,
    ) -> None:
        self.paths = list(paths)
        self.workload = workload
        self.poll_interval_s = poll_interval_s
        self.allow_empty_reload = allow_empty_reload
        self._current: MeshSnapshot | None = None
        self.last_problems: list[ConfigProblem] = []
        self.warnings: list[ConfigProblem] = []  # of the configuration in force (Istio analyzer-style findings)
        self.reload_attempts = 0
        self._publish = publish
        self._fingerprint: Fingerprint = ()
        self._attempted = asyncio.Condition()

    def load(self) -> MeshSnapshot:
        """Load and validate now; raises :class:`ConfigInvalid` listing every problem.

        A configuration that would drop every service and route of the one in
        force is refused too (see the module docstring).
        """
        fingerprint = _fingerprint(self.paths)
        self._fingerprint = fingerprint
        resources, problems = read_resources(self.paths)
        problems += reference_problems(resources, self.workload)
        errors = [p for p in problems if not p.is_warning]
        if errors:
            raise ConfigInvalid(errors)
        for warning in problems:
            log.warning("%s", warning)
        snapshot = compile_snapshot(resources, self.workload, _content_version(self.paths))
        previous = self._current
        intended = self.allow_empty_reload or any(isinstance(r, EmptyMeshMarker) for r in resources)
        if previous is not None and not intended and _content_size(snapshot) == (0, 0):
            services, routes = _content_size(previous)
            if services or routes:
                where = ", ".join(str(p) for p in self.paths)
                raise ConfigInvalid(
                    [
                        ConfigProblem(
                            where, 0, "", "", "",
                            f"refusing a reload that removes every service and route ({services} service(s), "
                            f"{routes} route(s) in force): an emptied or half-written file looks like this; "
                            "add a document 'apiVersion: meshlib.io/v1, kind: EmptyMesh' to mean it",
                        )
                    ]
                )
        self._current = snapshot
        self.warnings = problems  # errors raised above: what is left are this configuration's warnings
        return snapshot

    async def watch(self) -> None:
        """Poll for edits until cancelled; publish each valid change.

        An unexpected error in a poll (a filesystem hiccup, a bug) must not end
        hot reload for the life of the process: it is logged and the loop
        resumes after a jittered, growing pause (tenacity — its cost does not
        matter on this control path).
        """
        retrying = AsyncRetrying(
            wait=wait_random_exponential(multiplier=self.poll_interval_s, max=30.0),
            retry=retry_if_exception_type(Exception),
            before_sleep=lambda state: log.warning(
                "config watch failed (%r); retrying", state.outcome.exception() if state.outcome else None
            ),
        )
        async for attempt in retrying:
            with attempt:
                while True:
                    await asyncio.sleep(self.poll_interval_s)
                    await self.poll()

    async def poll(self) -> None:
        """Check the files once; reload when their fingerprint moved."""
        fingerprint = await asyncio.to_thread(_fingerprint, self.paths)
        if fingerprint == self._fingerprint:
            return
        self._fingerprint = fingerprint
        await self._reload()

    async def _reload(self) -> None:
        try:
            snapshot = await asyncio.to_thread(self.load)
        except ConfigInvalid as exc:
            self.last_problems = exc.problems
            log.error("config reload rejected; the last good configuration stays in force:\n%s", exc)
        else:
            self.last_problems = []
            self._publish(snapshot)
            log.info("config reloaded: version %s", snapshot.version)
        async with self._attempted:
            self.reload_attempts += 1
            self._attempted.notify_all()

    async def wait_for_reload(self, after: int, timeout_s: float = 5.0) -> None:
        """Wait until a reload attempt numbered beyond ``after`` has finished (valid or not)."""
        async with asyncio.timeout(timeout_s), self._attempted:
            await self._attempted.wait_for(lambda: self.reload_attempts > after)
