"""Consul as a live configuration source (``Mesh.from_consul``, ``meshlib control-plane --consul``).

Watches, all blocking queries (:class:`~meshlib.discovery.consul.watch.BlockingWatch`):

- ``/v1/catalog/services`` — which service names exist (skipped when ``services=`` is given);
- ``/v1/health/service/NAME`` — one per service: instances with their checks;
- ``/v1/config/KIND`` — one per L7 config-entry kind (five in all, whatever the service count);
- ``/v1/health/service/NAME?dc=DC`` — one per (service, other datacenter) that a
  ``service-resolver`` ``Redirect`` or ``Failover`` names, for cross-datacenter targets.

Watches drop unchanged answers; every real change marks the state dirty, and
one rebuild task assembles a :class:`~meshlib.discovery.consul.state.ConsulState`
from the raw payloads, compiles it with
:func:`~meshlib.discovery.consul.compile.compile_consul` (plus the optional
Istio YAML overlay, :mod:`.overlay_files`) and publishes the snapshot when its
version (a hash of the state) moved.

Bad config entries (:mod:`.accepted`): when the compiler reports problems naming
an entry (kind and name), that entry's last accepted version is put back (or the
entry left out if none was ever accepted) and the state compiled again — the bad
edit is rejected, everything else (other entries, every health change) still applies.
The problems stay in :meth:`ConsulConfigSource.status` until a good edit lands.

Consul away: each watch keeps its last good payload, so the snapshot in force
does not change; ``status()`` shows per watch ``connected``, ``last_index``,
``last_contact_ms`` and ``last_error``. Watches retry with jittered backoff
capped at 2 s and read in full on their first success, so the mesh is in step
again within a few seconds of Consul's return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from meshlib.config.model import MeshSnapshot, WorkloadIdentity
from meshlib.discovery.consul.accepted import (
    CONFIG_KINDS,
    entry_name,
    entry_of,
    problem_dict,
    rejected_entries,
    substitute_rejected,
)
from meshlib.discovery.consul.client import ConsulClient, ConsulResponse
from meshlib.discovery.consul.overlay_files import OverlayFiles
from meshlib.discovery.consul.state import ConsulState
from meshlib.discovery.consul.watch import BlockingWatch, Sleep, WatchTiming
from meshlib.errors import ConfigProblem

__all__ = ["CONFIG_KINDS", "ConsulConfigSource", "OverlayFiles", "consul_source_of", "entry_of"]

log = logging.getLogger("meshlib.consul")

CATALOG_PATH = "/v1/catalog/services"
DEFAULT_MAX_SERVICES = 10_000

Compiler = Callable[..., tuple[MeshSnapshot, list[ConfigProblem]]]


def _default_compiler() -> Compiler:
    from meshlib.discovery.consul.compile import compile_consul

    return compile_consul


def _must_be_object(payload: Any) -> None:
    if not isinstance(payload, dict):
        raise ValueError("want a JSON object of service names")


def _must_be_list_of_objects(payload: Any) -> None:
    if payload is None:
        return
    if not isinstance(payload, list) or not all(isinstance(item, dict) for item in payload):
        raise ValueError("want a JSON list of objects")


class ConsulConfigSource:
    """Watches Consul and publishes a compiled :class:`MeshSnapshot` whenever what it says changes."""

    def __init__(
        self,
        client: ConsulClient,
        workload: WorkloadIdentity,
        publish: Callable[[MeshSnapshot], None],
        *,
        services: Sequence[str] | None = None,
        datacenter: str | None = None,
        stale: bool = True,
        overlay: Sequence[str | Path] | None = None,
        timing: WatchTiming | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        initial_sync_timeout_s: float = 10.0,
        overlay_poll_interval_s: float = 0.25,
        max_services: int = DEFAULT_MAX_SERVICES,
        compiler: Compiler | None = None,
    ) -> None:
        self.client = client
        self.workload = workload
        self.explicit_services = None if services is None else sorted(set(services))
        self.datacenter = datacenter
        self.stale = stale
        self.timing = timing or WatchTiming()
        self.rng = rng if rng is not None else random.Random()
        self.clock = clock
        self.sleep = sleep
        self.initial_sync_timeout_s = initial_sync_timeout_s
        self.overlay_poll_interval_s = overlay_poll_interval_s
        self.max_services = max_services
        self.overlay = OverlayFiles(overlay) if overlay else None
        if self.overlay is not None:
            self.overlay.load()
        self._compiler = compiler
        self._publish = publish
        self.watches: dict[str, BlockingWatch] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._services: dict[str, list[Any]] = {}
        self._entries: dict[str, list[Any]] = {}
        self._remote: dict[tuple[str, str], list[Any]] = {}
        self._remote_targets: set[tuple[str, str]] = set()
        self._watched_services: set[str] = set()  # local services with a health watch
        self._accepted: dict[tuple[str, str], Any] = {}
        self.problems: list[ConfigProblem] = []
        self.snapshot: MeshSnapshot | None = None
        self.state: ConsulState | None = None
        self.publishes = 0
        self.registrations: list[Any] = []  # mesh.register handles on this client, deregistered by close()
        self.rebuilds = 0  # rebuild passes (published or not)
        self.last_build: dict[str, Any] = {}  # seconds spent compiling and publishing the last rebuild
        self.dropped_services = 0
        self._generation = 0  # bumped by every real change (watches diff payloads before calling back)
        self._built_key: tuple[int, int] | None = None
        self._dirty = asyncio.Event()
        self._first = asyncio.Event()
        self._published = asyncio.Condition()
        self._rebuilt = asyncio.Condition()
        self._watch_stepped = asyncio.Event()  # set whenever any watch recorded an outcome

    # -- watches -------------------------------------------------------------------

    async def _fetch(self, path: str, params: Sequence[tuple[str, str]], index: int, wait_s: float) -> ConsulResponse:
        return await self.client.get(path, params, index=index, wait_s=wait_s)

    def _start_watch(
        self,
        path: str,
        on_change: Callable[[Any], None],
        check: Callable[[Any], None],
        *,
        params: Sequence[tuple[str, str]] = (),
        key: str | None = None,
    ) -> None:
        key = key or path
        watch = BlockingWatch(
            path,
            self._fetch,
            on_change,
            params=params,
            stale=self.stale,
            timing=self.timing,
            rng=random.Random(self.rng.random()),
            clock=self.clock,
            sleep=self.sleep,
            check=check,
            on_step=self._watch_stepped.set,
        )
        self.watches[key] = watch
        self._tasks[key] = asyncio.get_running_loop().create_task(watch.run(), name=f"meshlib-consul {key}")

    def _stop_watch(self, key: str) -> None:
        self.watches.pop(key, None)
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    def _on_catalog(self, payload: Any) -> None:
        names = sorted(str(name) for name in payload)
        if len(names) > self.max_services:
            self.dropped_services = len(names) - self.max_services
            log.error("consul: %d services, watching the first %d only", len(names), self.max_services)
            names = names[: self.max_services]
        self._watch_services(names)

    def _watch_services(self, names: Sequence[str]) -> None:
        wanted = set(names)
        removed = False
        for name in sorted(self._watched_services - wanted):
            self._stop_watch(_health_path(name))
            removed = self._services.pop(name, None) is not None or removed
        for name in sorted(wanted - self._watched_services):  # each one's first answer marks the state dirty
            self._start_watch(_health_path(name), self._service_changed(name), _must_be_list_of_objects)
        self._watched_services = wanted
        if removed:
            self._mark_dirty()
        else:
            self._dirty.set()  # no data changed, but the first sync may now be complete: re-check

    def _service_changed(self, name: str) -> Callable[[Any], None]:
        def changed(payload: Any) -> None:
            self._services[name] = list(payload or [])
            self._mark_dirty()

        return changed

    def _kind_changed(self, kind: str) -> Callable[[Any], None]:
        def changed(payload: Any) -> None:
            self._entries[kind] = list(payload or [])
            if kind == "service-resolver":
                self._watch_remote(_remote_targets(self._entries[kind], self._discovered_datacenter()))
            self._mark_dirty()

        return changed

    def _watch_remote(self, targets: set[tuple[str, str]]) -> None:
        """Watch each (datacenter, service) a resolver sends traffic to; stop the ones no longer named."""
        for dc, name in list(self._remote_targets - targets):
            self._stop_watch(_remote_key(dc, name))
            self._remote.pop((dc, name), None)
        self._remote_targets = set(targets)
        for dc, name in sorted(targets):
            key = _remote_key(dc, name)
            if key not in self.watches:
                self._start_watch(
                    _health_path(name), self._remote_changed(dc, name), _must_be_list_of_objects,
                    params=[("dc", dc)], key=key,
                )

    def _remote_changed(self, dc: str, name: str) -> Callable[[Any], None]:
        def changed(payload: Any) -> None:
            self._remote[(dc, name)] = list(payload or [])
            self._mark_dirty()

        return changed

    def _mark_dirty(self) -> None:
        self._generation += 1
        self._dirty.set()

    # -- running -------------------------------------------------------------------

    async def run(self) -> None:
        """Start every watch and rebuild on changes, until cancelled."""
        for kind in CONFIG_KINDS:
            self._start_watch(f"/v1/config/{kind}", self._kind_changed(kind), _must_be_list_of_objects)
        if self.explicit_services is not None:
            self._watch_services(self.explicit_services)
        else:
            self._start_watch(CATALOG_PATH, self._on_catalog, _must_be_object)
        overlay_task = None
        if self.overlay is not None:
            overlay_task = asyncio.get_running_loop().create_task(self._watch_overlay(), name="meshlib-consul-overlay")
        deadline = self.clock() + self.initial_sync_timeout_s
        try:
            while True:
                if self._first.is_set() or self.clock() >= deadline:
                    await self._dirty.wait()
                else:  # wake at the deadline too: then publish whatever has answered
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._dirty.wait(), timeout=deadline - self.clock())
                self._dirty.clear()
                if not self._first.is_set() and not self._ready_for_first(deadline):
                    continue
                await asyncio.sleep(0)  # let answers that arrived together land in one rebuild
                self._dirty.clear()
                await self.rebuild()
        finally:
            if overlay_task is not None:
                overlay_task.cancel()
            for path in list(self._tasks):
                self._stop_watch(path)

    def _ready_for_first(self, deadline: float) -> bool:
        """Every watch answered; or, past the initial deadline, at least one did (publish what there is)."""
        synced = [watch.synced.is_set() for watch in self.watches.values()]
        return all(synced) or (self.clock() >= deadline and any(synced))

    async def _watch_overlay(self) -> None:
        assert self.overlay is not None
        while True:
            await asyncio.sleep(self.overlay_poll_interval_s)
            problems_before = self.overlay.problems
            try:
                if await asyncio.to_thread(self.overlay.reload_if_changed):
                    self._mark_dirty()
            except Exception:  # a filesystem hiccup must not end hot reload
                log.exception("overlay reload failed")
            if self.overlay.problems is not problems_before:
                self._watch_stepped.set()  # status() changed: wake wait_for_status

    @property
    def synced(self) -> bool:
        """True once the first snapshot was published."""
        return self._first.is_set()

    async def wait_first(self, timeout_s: float | None = None) -> bool:
        """Wait for the first published snapshot (bounded); False when it did not come in time."""
        try:
            async with asyncio.timeout(self.initial_sync_timeout_s + 1.0 if timeout_s is None else timeout_s):
                await self._first.wait()
        except TimeoutError:
            log.warning("no configuration from Consul at %s yet; starting without it", self.client.address)
            return False
        return True

    async def wait_for_publish(self, after: int, timeout_s: float = 10.0) -> None:
        """Wait until more than ``after`` snapshots have been published."""
        async with asyncio.timeout(timeout_s), self._published:
            await self._published.wait_for(lambda: self.publishes > after)

    # -- building --------------------------------------------------------------------

    def _discovered_datacenter(self) -> str:
        if self.datacenter:
            return self.datacenter
        for entries in self._services.values():
            for entry in entries:
                node = entry.get("Node") if isinstance(entry, dict) else None
                if isinstance(node, dict) and isinstance(node.get("Datacenter"), str) and node["Datacenter"]:
                    return str(node["Datacenter"])
        return "dc1"

    def current_state(self) -> ConsulState:
        """The raw Consul state as the watches see it now."""
        remote: dict[str, dict[str, list[Any]]] = {}
        for (dc, name), entries in sorted(self._remote.items()):
            remote.setdefault(dc, {})[name] = entries
        return ConsulState(
            self._discovered_datacenter(),
            {name: self._services[name] for name in sorted(self._services)},
            {kind: self._entries.get(kind, []) for kind in CONFIG_KINDS},
            remote,
        )

    async def wait_for_status(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0) -> None:
        """Wait until ``predicate(self.status())`` holds, re-checking after every watch request."""
        async with asyncio.timeout(timeout_s):
            while True:
                self._watch_stepped.clear()
                if predicate(self.status()):
                    return
                await self._watch_stepped.wait()

    async def wait_for_rebuild(self, after: int, timeout_s: float = 10.0) -> None:
        """Wait until more than ``after`` rebuild passes have finished (published or not)."""
        async with asyncio.timeout(timeout_s), self._rebuilt:
            await self._rebuilt.wait_for(lambda: self.rebuilds > after)

    async def rebuild(self) -> None:
        """Compile the current state and publish it when its version moved."""
        try:
            await self._rebuild()
        finally:
            async with self._rebuilt:
                self.rebuilds += 1
                self._rebuilt.notify_all()

    async def _rebuild(self) -> None:
        # Hashing the whole state costs ~0.2 s at 10k instances: the compiler does it once, for the
        # snapshot version; here a counter of real changes (payload diffs) decides whether to build.
        overlay_version = self.overlay.version if self.overlay is not None else 0
        key = (self._generation, overlay_version)
        if key == self._built_key:
            return
        self._built_key = key
        started = time.perf_counter()
        state = self.current_state()
        try:
            snapshot, problems = await asyncio.to_thread(self.compile, state)
        except Exception:  # a compiler bug must not stop the source; the last good snapshot stays
            log.exception("consul: compiling Consul's state failed; the last good configuration stays")
            return
        compiled = time.perf_counter()
        if problems and problems != self.problems:  # logged when they change, not on every rebuild
            log.error(
                "consul: %d config problem(s); rejected entries keep their last good version:\n%s",
                len(problems),
                "\n".join(f"  {p}" for p in problems),
            )
        self.problems = problems
        if self.snapshot is not None and snapshot.version == self.snapshot.version:
            self.last_build = {"compile_s": round(compiled - started, 4), "publish_s": 0.0, "published": False}
            return
        self.snapshot = snapshot
        self._publish(snapshot)
        self.last_build = {
            "compile_s": round(compiled - started, 4),
            "publish_s": round(time.perf_counter() - compiled, 4),
            "published": True,
        }
        self._first.set()
        async with self._published:
            self.publishes += 1
            self._published.notify_all()

    def compile(self, state: ConsulState) -> tuple[MeshSnapshot, list[ConfigProblem]]:
        """Compile ``state``; entries the compiler rejects fall back to their last accepted version."""
        compiler = self._compiler or _default_compiler()
        overlay = tuple(self.overlay.resources) if self.overlay is not None else ()
        snapshot, problems = compiler(state, self.workload, overlay=overlay)
        rejected = rejected_entries(problems)
        used = state
        if rejected:
            entries = {
                kind: substitute_rejected(kind, list(items), rejected, self._accepted)
                for kind, items in state.config_entries.items()
            }
            used = ConsulState(state.datacenter, state.services, entries, state.remote_services)
            snapshot, more = compiler(used, self.workload, overlay=overlay)
            problems = problems + [p for p in more if p not in problems]
            rejected = rejected_entries(more)  # what the state actually used still gets rejected for
        self.state = used
        # Everything the used state holds and the compiler took — including the last accepted
        # versions put back in place of rejected edits, so they survive later rebuilds too.
        self._accepted = {
            (kind, entry_name(entry)): entry
            for kind, items in used.config_entries.items()
            for entry in items
            if (kind, entry_name(entry)) not in rejected
        }
        return snapshot, problems

    # -- reporting -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Per watch: connected, last index, last contact, last error; plus config problems."""
        now = self.clock()
        watches = {path: watch.status.as_dict(now) for path, watch in sorted(self.watches.items())}
        errors = [f"{path}: {w['last_error']}" for path, w in watches.items() if not w["connected"] and w["last_error"]]
        errors += [str(p) for p in self.problems]
        overlay: dict[str, Any] | None = None
        if self.overlay is not None:
            overlay = {"paths": self.overlay.paths, "problems": [str(p) for p in self.overlay.problems]}
            errors += [str(p) for p in self.overlay.problems]
        return {
            "source": "consul",
            "address": self.client.address,
            "datacenter": self._discovered_datacenter(),
            "synced": self._first.is_set(),
            "connected": bool(watches) and all(w["connected"] for w in watches.values()),
            "watches_total": len(watches),
            "watches_failing": sum(1 for w in watches.values() if not w["connected"]),
            "services": len(self._services),
            "services_not_watched": self.dropped_services,
            "state_version": None if self.snapshot is None else self.snapshot.version,
            "rebuilds": self.rebuilds,
            "last_build": dict(self.last_build),
            "watches": watches,
            "config_problems": [problem_dict(p) for p in self.problems],
            "overlay": overlay,
            "last_error": errors,
        }

    async def close(self) -> None:
        """Stop the watches, deregister what ``mesh.register`` registered through this source, close the client."""
        for path in list(self._tasks):
            self._stop_watch(path)
        registrations, self.registrations = self.registrations, []
        for registration in registrations:
            try:
                async with asyncio.timeout(5.0):
                    await registration.deregister()
            except Exception as exc:  # the agent's DeregisterCriticalServiceAfter cleans up what this misses
                log.warning("consul: deregistering %s on stop failed: %s", registration.service_id, exc)
        await self.client.close()


def consul_source_of(mesh: Any) -> ConsulConfigSource:
    """The Consul source of a mesh built with ``Mesh.from_consul`` (for status, waiting on publishes)."""
    source = getattr(mesh, "_consul_source", None)
    if not isinstance(source, ConsulConfigSource):
        raise RuntimeError("this mesh has no Consul source (build it with Mesh.from_consul)")
    return source


def _health_path(name: str) -> str:
    return f"/v1/health/service/{name}"


def _remote_key(dc: str, name: str) -> str:
    return f"/v1/health/service/{name}?dc={dc}"


def _remote_targets(resolvers: Sequence[Any], local_dc: str) -> set[tuple[str, str]]:
    """(datacenter, service) pairs in other datacenters that resolvers redirect or fail over to."""
    found: set[tuple[str, str]] = set()

    def add(dc: Any, service: Any, default: str) -> None:
        if isinstance(dc, str) and dc and dc != local_dc:
            found.add((dc, service if isinstance(service, str) and service else default))

    for entry in resolvers:
        if not isinstance(entry, Mapping):
            continue
        name = entry_name(entry)
        redirect = entry.get("Redirect")
        if isinstance(redirect, Mapping):
            add(redirect.get("Datacenter"), redirect.get("Service"), name)
        failover = entry.get("Failover")
        if not isinstance(failover, Mapping):
            continue
        for spec in failover.values():
            if not isinstance(spec, Mapping):
                continue
            service = spec.get("Service")
            for dc in spec.get("Datacenters") or []:
                add(dc, service, name)
            for target in spec.get("Targets") or []:
                if isinstance(target, Mapping):
                    add(target.get("Datacenter"), target.get("Service") or service, name)
    return found
