"""The last-accepted-entry rule of the Consul source: which config entry a problem is about, and what replaces it.

When the compiler rejects a config entry (it names it as ``kind``/``name`` or
as ``file="consul <kind>/<name>"``), the source compiles again with that
entry's last accepted version in its place — or without it, if no version
was ever accepted — so a bad edit is rejected while every other entry and
every health change still applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meshlib.errors import ConfigProblem

__all__ = ["CONFIG_KINDS", "entry_name", "entry_of", "problem_dict", "rejected_entries", "substitute_rejected"]

CONFIG_KINDS = ("service-defaults", "proxy-defaults", "service-router", "service-splitter", "service-resolver")


def entry_name(entry: Any) -> str:
    if isinstance(entry, Mapping):
        return str(entry.get("Name", entry.get("name", "")))
    return ""


def entry_of(problem: ConfigProblem) -> tuple[str, str] | None:
    """The (kind, name) of the config entry a problem is about, or None.

    The compiler names the entry either in ``kind``/``name`` or, like a file, as
    ``file="consul <kind>/<name>"``; a ``namespace/`` prefix on the name is dropped.
    """
    if problem.kind in CONFIG_KINDS and problem.name:
        return problem.kind, problem.name.rsplit("/", 1)[-1]
    where = problem.file
    if where.startswith("consul "):
        kind, _, name = where[len("consul ") :].partition("/")
        if kind in CONFIG_KINDS and name:
            return kind, name
    return None


def rejected_entries(problems: Sequence[ConfigProblem]) -> set[tuple[str, str]]:
    """(kind, name) of every config entry a problem names."""
    return {entry for entry in map(entry_of, problems) if entry is not None}


def problem_dict(problem: ConfigProblem) -> dict[str, str]:
    kind, name = entry_of(problem) or (problem.kind, problem.name)
    return {"kind": kind, "name": name, "field": problem.field, "message": problem.message, "text": str(problem)}


def substitute_rejected(
    kind: str, items: list[Any], rejected: set[tuple[str, str]], accepted: Mapping[tuple[str, str], Any]
) -> list[Any]:
    out = []
    for entry in items:
        key = (kind, entry_name(entry))
        if key not in rejected:
            out.append(entry)
        elif key in accepted:
            out.append(accepted[key])
    return out
