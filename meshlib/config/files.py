"""Istio YAML on disk: which files, reading them, and the top-level load API.

A path may be a file or a directory; a directory contributes every ``*.yaml``
and ``*.yml`` below it, recursively (skipping hidden files and directories), in sorted order (so problems and
"first one wins" conflicts are reproducible). Problems name files the way the
user named them: ``mesh/`` gives ``mesh/reviews.yaml``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from meshlib.config.compile import DEFAULT_WORKLOAD, compile_snapshot, reference_problems
from meshlib.config.documents import parse_file
from meshlib.config.gc_pause import gc_paused
from meshlib.config.istio_types import IstioResource, Meta
from meshlib.config.model import MeshSnapshot, WorkloadIdentity
from meshlib.config.peer_authentication import PeerAuthenticationSpec
from meshlib.config.security_model import AuthorizationPolicySpec
from meshlib.errors import ConfigInvalid, ConfigProblem

log = logging.getLogger("meshlib.config")
SUFFIXES = (".yaml", ".yml")
PARSE_CACHE_FILES = 64
_PARSED: OrderedDict[tuple[str, bytes], tuple[tuple[IstioResource, ...], tuple[ConfigProblem, ...]]] = OrderedDict()
_CACHE_LOCK = threading.Lock()  # reloads parse in worker threads
MAX_FILE_BYTES = 8 * 1024 * 1024  # ~20x a 10,000-endpoint file; larger is refused, not parsed


def config_file_set(paths: Sequence[str | Path]) -> list[Path]:
    """The concrete YAML files ``paths`` stand for, in load order (for loading and watching).

    Paths that do not exist are left out (``validate_paths`` reports them).
    """
    files: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix in SUFFIXES
                # Hidden files and directories (.git, editor temp files) are not configuration.
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and p.is_file()
            )
        elif path.is_file():
            found = [path]
        else:
            found = []
        for file in found:
            if file not in seen:
                seen.add(file)
                files.append(file)
    return files


def read_resources(paths: Sequence[str | Path]) -> tuple[list[IstioResource], list[ConfigProblem]]:
    """Parse and validate every file of ``paths`` (each on its own); all problems, in file order."""
    resources: list[IstioResource] = []
    problems: list[ConfigProblem] = []
    for raw in paths:
        if not Path(raw).exists():
            problems.append(ConfigProblem(str(raw), 0, "", "", "", "no such file or directory"))
    for file in config_file_set(paths):
        name = str(file)
        try:
            with file.open("rb") as stream:
                data = stream.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                limit = f"{MAX_FILE_BYTES // (1024 * 1024)} MiB"
                problems.append(ConfigProblem(name, 0, "", "", "", f"file too large: more than {limit}"))
                continue
            found, file_problems = _parse_cached(name, data)
        except UnicodeDecodeError as exc:
            problems.append(ConfigProblem(name, 0, "", "", "", f"not UTF-8 text: {exc.reason}"))
            continue
        except OSError as exc:
            problems.append(ConfigProblem(name, 0, "", "", "", f"cannot read: {exc.strerror or exc}"))
            continue
        resources.extend(found)
        problems.extend(file_problems)
    return resources, problems + duplicate_problems(resources)


def _parse_cached(name: str, data: bytes) -> tuple[tuple[IstioResource, ...], tuple[ConfigProblem, ...]]:
    """``parse_file`` of one file, reused while its name and bytes are unchanged.

    A hot reload re-reads every file when one changes; the unchanged ones
    (a 10,000-endpoint registry next to a small routing file) are not parsed
    again. Parse results are immutable, so sharing them is safe.
    """
    key = (name, hashlib.blake2b(data, digest_size=16).digest())
    with _CACHE_LOCK:
        cached = _PARSED.get(key)
        if cached is not None:
            _PARSED.move_to_end(key)
            return cached
    with gc_paused():  # hundreds of thousands of objects that all live until the parse ends (gc_pause)
        found, problems = parse_file(name, data.decode("utf-8"))
    result = (tuple(found), tuple(problems))
    with _CACHE_LOCK:
        _PARSED[key] = result
        while len(_PARSED) > PARSE_CACHE_FILES:
            _PARSED.popitem(last=False)
    return result


def _identity(resource: IstioResource) -> tuple[str, str, str, str, int] | None:
    """(kind, namespace, name, file, line) of a named resource."""
    if isinstance(resource, AuthorizationPolicySpec):
        o = resource.origin
        return "AuthorizationPolicy", o.namespace, o.name, o.file, o.line
    if isinstance(resource, PeerAuthenticationSpec):
        return "PeerAuthentication", resource.namespace, resource.name, resource.file, resource.line
    meta: Meta = resource.meta
    if not meta.name:
        return None
    return meta.kind, meta.namespace, meta.name, meta.file, meta.line


def duplicate_problems(resources: Sequence[IstioResource]) -> list[ConfigProblem]:
    """Two resources with one kind/namespace/name: the later one is an error naming both places.

    In Kubernetes the second cannot exist (applying it replaces the first), so
    a directory holding both is a mistake, not two rules to merge.
    """
    first: dict[tuple[str, str, str], tuple[str, int]] = {}
    problems: list[ConfigProblem] = []
    for resource in resources:
        identity = _identity(resource)
        if identity is None:
            continue
        kind, namespace, name, file, line = identity
        seen = first.setdefault((kind, namespace, name), (file, line))
        if seen != (file, line):
            ref = f"{namespace}/{name}"
            message = (
                f"duplicate {kind} {ref}: already defined at {seen[0]}:{seen[1]} "
                "(Kubernetes keeps one object per kind, namespace and name)"
            )
            problems.append(ConfigProblem(file, line, kind, ref, "metadata.name", message))
    return problems


def validate_paths(
    paths: Sequence[str | Path],
    workload: WorkloadIdentity = DEFAULT_WORKLOAD,
    *,
    check_hosts: bool = True,
) -> list[ConfigProblem]:
    """Every problem in ``paths``, errors and warnings (no errors = valid); what ``meshlib validate`` prints."""
    resources, problems = read_resources(paths)
    return problems + reference_problems(resources, workload, check_hosts=check_hosts)


def load_snapshot(
    paths: Sequence[str | Path],
    workload: WorkloadIdentity = DEFAULT_WORKLOAD,
    version: str = "",
    *,
    check_hosts: bool = True,
) -> MeshSnapshot:
    """Load, validate and compile ``paths`` for ``workload``.

    Raises :class:`ConfigInvalid` with every error found (per-document and
    cross-resource) when anything is wrong; nothing partial is returned.
    Warnings do not stop the load; they are logged (``meshlib.config``).
    """
    resources, problems = read_resources(paths)
    problems += reference_problems(resources, workload, check_hosts=check_hosts)
    errors = [p for p in problems if not p.is_warning]
    if errors:
        raise ConfigInvalid(errors)
    for warning in problems:
        log.warning("%s", warning)
    return compile_snapshot(resources, workload, version, check_hosts=check_hosts)
