"""Istio YAML files as a configuration source, hot-reloaded.

The source polls the files' (mtime, size) fingerprints — a directory is
re-listed on every poll, so added and removed files count — and rebuilds the
snapshot when anything moved. Polling keeps meshlib free of a filesystem-event
dependency and costs a few ``stat`` calls per interval; the default interval
(0.25 s) puts an edit in force well within the one-second target.

An edit that does not validate is reported (logged, and kept in
:attr:`FileConfigSource.last_problems` for ``mesh.status()``) and the last
good snapshot stays in force.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from meshlib.config import config_file_set, load_snapshot
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
    digest = hashlib.sha256()
    for path in config_file_set(paths):
        try:
            digest.update(str(path).encode())
            digest.update(path.read_bytes())
        except OSError:
            continue
    return digest.hexdigest()[:12]


class FileConfigSource:
    """Loads Istio YAML from ``paths`` and republishes it whenever the files change."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        workload: WorkloadIdentity,
        publish: Callable[[MeshSnapshot], None],
        *,
        poll_interval_s: float = 0.25,
    ) -> None:
        self.paths = list(paths)
        self.workload = workload
        self.poll_interval_s = poll_interval_s
        self.last_problems: list[ConfigProblem] = []
        self.reload_attempts = 0
        self._publish = publish
        self._fingerprint: Fingerprint = ()
        self._attempted = asyncio.Condition()

    def load(self) -> MeshSnapshot:
        """Load and validate now; raises :class:`ConfigInvalid` listing every problem."""
        fingerprint = _fingerprint(self.paths)
        snapshot = load_snapshot(self.paths, self.workload, _content_version(self.paths))
        self._fingerprint = fingerprint
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
