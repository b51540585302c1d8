"""Preloading an emulator from a JSON or YAML file (``meshlib consul-dev --load FILE``).

.. code-block:: yaml

    services:
      - {name: reviews, port: 9081, id: reviews-v1, tags: [v1], meta: {version: v1}}
      - {name: reviews, port: 9082, id: reviews-v2, tags: [v2], meta: {version: v2}, status: warning}
      - {name: ratings, port: 9090, dc: dc2, locality: {Region: eu-west-1, Zone: eu-west-1a}}
    config_entries:
      - {Kind: service-defaults, Name: reviews, Protocol: http}
      - Kind: service-splitter
        Name: reviews
        Splits: [{Weight: 90, ServiceSubset: v1}, {Weight: 10, ServiceSubset: v2}]

Service fields: ``name`` and ``port`` (required), ``address`` (127.0.0.1),
``id``, ``tags``, ``meta``, ``weights``, ``status`` (passing|warning|critical),
``node``, ``dc``, ``locality`` (the node's). Config entries are Consul's own
JSON shape and go through the same validation as ``PUT /v1/config``, in file
order (write ``service-defaults`` before a splitter that needs ``http``).
Every problem is reported as ``FILE: services[2].port: message``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from meshlib.testing.consul.emulator import ConsulEmulator

MAX_FILE_BYTES = 4 << 20
_SERVICE_FIELDS = {"name", "port", "address", "id", "tags", "meta", "weights", "status", "node", "dc", "locality"}


class LoadError(ValueError):
    """A preload file problem, naming the file and the field."""


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise LoadError(f"{where}: {message}")


def load_file(emulator: ConsulEmulator, path: str | Path) -> tuple[int, int]:
    """Load services and config entries into ``emulator``; returns ``(services, entries)`` loaded."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise LoadError(f"{file}: {exc.strerror or exc}") from None
    _require(len(raw) <= MAX_FILE_BYTES, str(file), f"larger than {MAX_FILE_BYTES} bytes")
    try:
        data: Any = yaml.safe_load(raw) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise LoadError(f"{file}{line}: not valid JSON/YAML: {getattr(exc, 'problem', exc)}") from None
    _require(isinstance(data, dict), str(file), "the top level must be a mapping with services / config_entries")
    unknown = set(data) - {"services", "config_entries"}
    _require(not unknown, str(file), f"unknown top-level key(s): {', '.join(sorted(map(str, unknown)))}")
    services = data.get("services") or []
    entries = data.get("config_entries") or []
    _require(isinstance(services, list), f"{file}: services", "must be a list")
    _require(isinstance(entries, list), f"{file}: config_entries", "must be a list")
    for i, item in enumerate(services):
        _load_service(emulator, item, f"{file}: services[{i}]")
    for i, entry in enumerate(entries):
        where = f"{file}: config_entries[{i}]"
        _require(isinstance(entry, dict), where, "must be a mapping")
        try:
            emulator.set_config_entry(entry)
        except ValueError as exc:
            raise LoadError(f"{where}: {exc}") from None
    return len(services), len(entries)


def _load_service(emulator: ConsulEmulator, item: Any, where: str) -> None:
    _require(isinstance(item, dict), where, "must be a mapping")
    unknown = set(item) - _SERVICE_FIELDS
    _require(not unknown, where, f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    _require(isinstance(item.get("name"), str) and bool(item["name"]), f"{where}.name", "a non-empty string")
    port = item.get("port")
    _require(isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536, f"{where}.port",
             "an integer port (1-65535)")
    tags = item.get("tags") or []
    _require(isinstance(tags, list) and all(isinstance(t, str) for t in tags), f"{where}.tags", "a list of strings")
    meta = item.get("meta") or {}
    _require(isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values()), f"{where}.meta",
             "a mapping of strings")
    locality = item.get("locality")
    _require(locality is None or isinstance(locality, dict), f"{where}.locality", "a mapping {Region, Zone}")
    weights = item.get("weights")
    _require(weights is None or (isinstance(weights, dict) and all(isinstance(v, int) for v in weights.values())),
             f"{where}.weights", "a mapping {Passing, Warning} of integers")
    try:
        emulator.add_service(
            item["name"], port, address=str(item.get("address", "127.0.0.1")),
            service_id=str(item["id"]) if item.get("id") else None, node=item.get("node"),
            datacenter=item.get("dc"), tags=tags, meta={str(k): v for k, v in meta.items()}, weights=weights,
            status=str(item.get("status", "passing")), node_locality=locality,
        )
    except ValueError as exc:
        raise LoadError(f"{where}.status: {exc}") from None
