"""Per-stream sync status, like ``istioctl proxy-status``, and its table rendering.

The protocol servers write into a :class:`StreamStatus` as they send and as
the client ACKs/NACKs (istiod keeps the same facts per connection: last nonce
sent, last nonce acked, last NACK). :class:`StatusBoard` holds the live
streams, produces the JSON-ready dict served at ``/status``, and lets tests
and benchmarks await a condition over the streams without polling.

States per type, as istioctl prints them:

- ``SYNCED``: the last response sent on the stream was ACKed;
- ``NACKED``: the last response sent was rejected (the error is kept);
- ``STALE``: a response was sent and neither ACKed nor NACKed yet;
- ``NOT SENT``: nothing of this type was sent on the stream.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from meshlib.controlplane.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE, short_name

__all__ = ["StatusBoard", "StreamStatus", "TypeStatus", "render_status_table"]

SYNCED = "SYNCED"
NACKED = "NACKED"
STALE = "STALE"
NOT_SENT = "NOT SENT"

_ids = itertools.count(1)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


@dataclass(slots=True)
class TypeStatus:
    """What one stream was sent of one type, and what the client said about it."""

    subscribed: list[str] | None = None  # None = wildcard
    version_sent: str = ""
    nonce_sent: str = ""
    sent_at: float | None = None
    resources_sent: int = 0
    version_acked: str = ""
    nonce_acked: str = ""
    acked_at: float | None = None
    nack_error: str | None = None
    nack_version: str = ""
    nack_nonce: str = ""
    nack_at: float | None = None

    @property
    def state(self) -> str:
        if not self.nonce_sent:
            return NOT_SENT
        if self.nonce_acked == self.nonce_sent:
            return SYNCED
        if self.nack_nonce == self.nonce_sent:
            return NACKED
        return STALE

    def sent(self, version: str, nonce: str, count: int) -> None:
        self.version_sent, self.nonce_sent, self.resources_sent, self.sent_at = version, nonce, count, time.time()

    def acked(self, version: str, nonce: str) -> None:
        self.version_acked, self.nonce_acked, self.acked_at = version, nonce, time.time()

    def nacked(self, version: str, nonce: str, error: str) -> None:
        self.nack_version, self.nack_nonce, self.nack_error, self.nack_at = version, nonce, error, time.time()

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "subscribed": "*" if self.subscribed is None else sorted(self.subscribed),
            "version_sent": self.version_sent,
            "nonce_sent": self.nonce_sent,
            "sent_at": _iso(self.sent_at),
            "resources_sent": self.resources_sent,
            "version_acked": self.version_acked,
            "nonce_acked": self.nonce_acked,
            "acked_at": _iso(self.acked_at),
            "last_nack": None if self.nack_error is None else {
                "error": self.nack_error, "version": self.nack_version, "nonce": self.nack_nonce,
                "at": _iso(self.nack_at),
            },
        }


@dataclass(slots=True)
class StreamStatus:
    """One ADS stream (grpcio opens one per ``xds:///`` target, all with the same node id)."""

    protocol: str  # "sotw" or "delta"
    peer: str
    stream_id: int = field(default_factory=lambda: next(_ids))
    connected_at: float = field(default_factory=time.time)
    node_id: str = ""
    node_cluster: str = ""
    user_agent: str = ""
    group: str = ""
    types: dict[str, TypeStatus] = field(default_factory=dict)

    def type(self, type_url: str) -> TypeStatus:
        found = self.types.get(type_url)
        if found is None:
            found = self.types[type_url] = TypeStatus()
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "protocol": self.protocol,
            "peer": self.peer,
            "node_id": self.node_id,
            "node_cluster": self.node_cluster,
            "user_agent": self.user_agent,
            "group": self.group,
            "connected_at": _iso(self.connected_at),
            "types": {url: t.to_dict() for url, t in sorted(self.types.items())},
        }


class StatusBoard:
    """The live streams; protocol code calls :meth:`changed` after every update it makes."""

    def __init__(self) -> None:
        self.streams: dict[int, StreamStatus] = {}
        self._changed = asyncio.Event()

    def register(self, stream: StreamStatus) -> None:
        self.streams[stream.stream_id] = stream
        self.changed()

    def unregister(self, stream: StreamStatus) -> None:
        self.streams.pop(stream.stream_id, None)
        self.changed()

    def changed(self) -> None:
        self._changed.set()

    async def wait_until(self, predicate: Callable[[StatusBoard], bool]) -> None:
        """Return once ``predicate(board)`` holds; bound it with ``asyncio.timeout``.

        Updates that arrive while the waiter is not running coalesce into one
        re-evaluation, so a predicate scanning all streams stays cheap under
        a thousand ACKs. With more streams a scan costs milliseconds, so the
        waiter also lets updates accumulate for a few times what its last scan
        took (at most 100 ms): the scans then take at most ~20% of the loop
        instead of starving the streams they watch.
        """
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            if predicate(self):
                return
            scan_s = loop.time() - started
            self._changed.clear()
            await self._changed.wait()
            if scan_s > 0.0005:  # a big board: coalesce more updates per scan
                await asyncio.sleep(min(4 * scan_s, 0.1))

    def count(self, type_url: str, *, version: str | None = None, state: str = SYNCED) -> int:
        """Streams whose ``type_url`` is in ``state`` (and was sent ``version``, if given)."""
        total = 0
        if state == SYNCED:  # what benchmarks and tests wait for, over thousands of streams: inlined
            for stream in self.streams.values():
                t = stream.types.get(type_url)
                if t is not None and t.nonce_sent and t.nonce_acked == t.nonce_sent and (
                    version is None or t.version_sent == version
                ):
                    total += 1
            return total
        for stream in self.streams.values():
            t = stream.types.get(type_url)
            if t is not None and t.state == state and (version is None or t.version_sent == version):
                total += 1
        return total

    def to_dict(self, versions: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, Any]:
        """JSON-ready status; ``versions`` is ``{group: {type_url: current version}}`` from the cache."""
        return {
            "generated_at": _iso(time.time()),
            "streams": [s.to_dict() for s in sorted(self.streams.values(), key=lambda s: (s.node_id, s.stream_id))],
            "groups": {g: dict(v) for g, v in sorted((versions or {}).items())},
        }


_COLUMNS = (("CDS", CLUSTER), ("LDS", LISTENER), ("EDS", ENDPOINT), ("RDS", ROUTE))


def render_status_table(status: Mapping[str, Any]) -> str:
    """Render :meth:`StatusBoard.to_dict` output as istioctl-style columns NODE, CLIENT, CDS, LDS, EDS, RDS."""
    header = ["NODE", "CLIENT", *(name for name, _ in _COLUMNS)]
    rows = [header]
    for stream in status.get("streams", []):
        types = stream.get("types", {})
        client = stream.get("user_agent") or "-"
        if stream.get("group"):
            client = f"{client} ({stream['group']})"
        cells = [stream.get("node_id") or "-", client]
        for _, url in _COLUMNS:
            t = types.get(url)
            if t is None:
                cells.append(NOT_SENT)
                continue
            cell = t["state"]
            if cell == NACKED:
                error = " ".join(str(t["last_nack"]["error"]).split())  # one line, however the client wrapped it
                cell = f"{NACKED} ({error if len(error) <= 60 else error[:57] + '...'})"
            elif cell == SYNCED and t["version_sent"]:
                cell = f"{SYNCED} ({t['version_sent'][:8]})"
            cells.append(cell)
        rows.append(cells)
    seen = {short_name(u) for s in status.get("streams", []) for u in s.get("types", {})}
    extra = sorted(seen - {name for name, _ in _COLUMNS})
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if extra:
        lines.append(f"(also subscribed: {', '.join(extra)})")
    return "\n".join(lines) + "\n"
