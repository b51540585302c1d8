"""The compiled route table: virtual host selection and first-match routing.

:meth:`RouteTable.compile` runs on the control path and does all the work
that does not depend on the request; :meth:`RouteTable.route` is the request
path and only reads.

Why an index instead of trying routes one by one: Envoy walks a virtual
host's routes in order and takes the first whose match holds. Doing that
literally in Python costs one or two function calls per route, several
microseconds on a 100-route host. Almost every route, though, carries a path
condition (istiod gives a block without ``uri`` the condition ``prefix: "/"``)
that can be answered for *all* routes at once: exact paths by a dict, prefixes
by one ``bisect`` in the sorted prefix list plus a short walk up the chain of
prefixes that are prefixes of each other. The same index works for the
method, case-insensitive paths and each header name used in the host
("columns"); regexes are narrowed by their literal prefixes. Each (route,
match block) pair — Envoy's unit, as istiod emits one Envoy route per block —
owns one bit; the columns yield the bits whose conditions hold, and only those
entries run what the index cannot answer (regexes, withoutHeaders, query
parameters, ...), lowest bit (earliest route) first. The first success is the
same route Envoy would pick; a randomized test checks this against a plain
in-order scan.
"""

from __future__ import annotations

import weakref
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meshlib.config.model import MeshSnapshot, Route, RouteConfiguration, RouteMatch, VirtualHost
from meshlib.config.regex import RegexInvalid
from meshlib.errors import ConfigInvalid, ConfigProblem
from meshlib.request import RequestView
from meshlib.routing.match import (
    DEFAULT_PREFIX,
    Condition,
    RequestPredicate,
    compile_conditions,
    compile_match,
    compile_string_match,
    conditions,
    header_value,
    regex_literal_prefixes,
)
from meshlib.routing.weighted import WeightedPicker, register_pickers, unregister_pickers

__all__ = ["RouteHit", "RouteTable"]


@dataclass(frozen=True, slots=True)
class RouteHit:
    """The outcome of routing one request.

    ``matched`` is the match block that selected the route (``None`` for a
    route without blocks); rewriting the path needs it, since ``rewrite.uri``
    replaces whatever that block's uri condition matched.
    """

    route: Route
    virtual_host: VirtualHost
    matched: RouteMatch | None


class _Entry:
    """One (route, match block) pair in route order; its hit is prebuilt so routing allocates nothing."""

    __slots__ = ("columns", "hit", "residual")

    def __init__(self, hit: RouteHit, residual: RequestPredicate | None) -> None:
        self.hit = hit
        # Conditions the index does not answer exactly; None = nothing left to test.
        self.residual = residual
        # Positions of the columns besides the path that constrain this entry.
        self.columns: tuple[int, ...] = ()


class _PrefixIndex:
    """All entries whose path condition is a prefix, answerable with one bisect.

    For a path ``p`` let ``s`` be the greatest key ``<= p``. Every key that is
    a prefix of ``p`` lies between itself and ``p`` in sort order, hence
    between itself and ``s``, hence is a prefix of ``s`` too. So the keys that
    are prefixes of ``p`` are found on ``s``'s chain of ancestor keys; the
    first (longest) ancestor that ``p`` starts with carries, precomputed, the
    union of the bits of all its own ancestors.
    """

    __slots__ = ("chains", "keys")

    def __init__(self, bits_by_prefix: Mapping[str, int]) -> None:
        self.keys = sorted(bits_by_prefix)
        chains: list[tuple[tuple[str, int], ...]] = []
        for key in self.keys:
            # Longest first; O(len(key)) dict probes rather than a scan of every key.
            ancestors = [key[:n] for n in range(len(key), -1, -1) if key[:n] in bits_by_prefix]
            chain = []
            for i, ancestor in enumerate(ancestors):
                bits = 0
                for inner in ancestors[i:]:  # every ancestor of `ancestor` is further down the list
                    bits |= bits_by_prefix[inner]
                chain.append((ancestor, bits))
            chains.append(tuple(chain))
        self.chains = tuple(chains)

    def lookup(self, path: str) -> int:
        i = bisect_right(self.keys, path) - 1
        if i < 0:
            return 0
        for prefix, bits in self.chains[i]:
            if path.startswith(prefix):
                return bits
        return 0

    def __len__(self) -> int:
        return len(self.keys)


_HEADER, _METHOD_VALUE, _LOWER_PATH = 0, 1, 2


class _Column:
    """One indexed request field (path, lower-cased path, method, or a header).

    For a request value, the entries allowed by this column are
    ``unconstrained | present | exact[value] | prefix.lookup(value)`` (only
    ``unconstrained`` when the value is missing); the request path computes
    that inline in :meth:`_CompiledVirtualHost.route`.
    """

    __slots__ = ("constrained", "exact", "kind", "name", "prefix", "present", "unconstrained")

    def __init__(self, name: str, kind: int) -> None:
        self.name = name
        self.kind = kind  # where the value comes from: a header, the method, the lower-cased path
        self.unconstrained = 0
        self.constrained = 0  # the complement: entries with a condition on this column
        self.present = 0
        self.exact: dict[str, int] = {}
        self.prefix: _PrefixIndex | None = None


class _ColumnBuilder:
    """Collects one column's conditions while the entries are flattened."""

    def __init__(self, name: str, kind: int) -> None:
        self.column = _Column(name, kind)
        self.constrained = 0
        self.prefixes: dict[str, int] = {}

    def add_exact(self, key: str, bit: int) -> None:
        self.column.exact[key] = self.column.exact.get(key, 0) | bit
        self.constrained |= bit

    def add_prefix(self, key: str, bit: int) -> None:
        self.prefixes[key] = self.prefixes.get(key, 0) | bit
        self.constrained |= bit

    def add_present(self, bit: int) -> None:
        self.column.present |= bit
        self.constrained |= bit

    def build(self, all_bits: int) -> _Column:
        column = self.column
        column.unconstrained = all_bits & ~self.constrained
        column.constrained = self.constrained
        column.prefix = _PrefixIndex(self.prefixes) if self.prefixes else None
        return column


_PATH = ":path"
_PATH_CI = ":path-ci"
_METHOD = ":method"


class _CompiledVirtualHost:
    """A virtual host's routes, flattened to entries and indexed by column.

    The path column is evaluated for every request: it is the most selective
    and nearly every entry has a path condition. The other columns (method,
    lower-cased path, headers) are evaluated only once the earliest remaining
    candidate needs one, and then only those some candidate depends on — so a
    hit on a path-only route pays for the path alone, and a route behind many
    header-guarded ones pays one lookup per header rather than one test per
    route.
    """

    __slots__ = ("columns", "entries", "memo_headers", "path", "virtual_host")

    def __init__(self, virtual_host: VirtualHost, config_port: int | None) -> None:
        self.virtual_host = virtual_host
        self.memo_headers = _memo_headers(virtual_host, config_port)
        builders: dict[str, _ColumnBuilder] = {
            _PATH: _ColumnBuilder(_PATH, _LOWER_PATH),  # kind unused: the path is read directly
            _PATH_CI: _ColumnBuilder(_PATH_CI, _LOWER_PATH),
            _METHOD: _ColumnBuilder(_METHOD, _METHOD_VALUE),
        }
        entries: list[_Entry] = []
        for route in virtual_host.routes:
            for block in _live_blocks(route, config_port):
                bit = 1 << len(entries)
                try:
                    residual = _index_block(block, bit, builders)
                except RegexInvalid as exc:
                    raise ConfigInvalid([_regex_problem(route, exc)]) from exc
                entries.append(_Entry(RouteHit(route, virtual_host, block), residual))
        all_bits = (1 << len(entries)) - 1
        self.path = builders.pop(_PATH).build(all_bits)
        # Only columns that constrain something can ever cost a lookup.
        self.columns = tuple(b.build(all_bits) for b in builders.values() if b.constrained)
        for i, entry in enumerate(entries):
            entry.columns = tuple(
                n for n, column in enumerate(self.columns) if not column.unconstrained >> i & 1
            )
        self.entries = tuple(entries)

    def route(self, request: RequestView) -> RouteHit | None:
        # Hot path: column lookups are inlined (no method calls) on purpose.
        path = request.path
        column = self.path
        bits = column.unconstrained | column.exact.get(path, 0)
        index = column.prefix
        if index is not None:
            i = bisect_right(index.keys, path) - 1
            if i >= 0:
                for prefix, prefix_bits in index.chains[i]:
                    if path.startswith(prefix):
                        bits |= prefix_bits
                        break
        entries = self.entries
        # Phase 1: while the earliest candidates need no other column (the
        # common case: a path-only route), try them directly.
        while bits:
            lowest = bits & -bits
            entry = entries[lowest.bit_length() - 1]
            if entry.columns:
                break
            if entry.residual is None or entry.residual(request):
                return entry.hit
            bits ^= lowest
        else:
            return None
        # Phase 2: evaluate each column some remaining candidate depends on,
        # once, pruning as we go; then only residual predicates are left.
        for column in self.columns:
            if not bits & column.constrained:
                continue
            kind = column.kind
            if kind == _HEADER:
                headers = request.headers
                value = headers.get(column.name)
                if value is not None and type(headers) is not dict:
                    value = header_value(headers, column.name)  # may join repeats
            elif kind == _METHOD_VALUE:
                value = request.method
            else:
                value = path.lower()
            allowed = column.unconstrained
            if value is not None:
                allowed |= column.present | column.exact.get(value, 0)
                index = column.prefix
                if index is not None:
                    i = bisect_right(index.keys, value) - 1
                    if i >= 0:
                        for prefix, prefix_bits in index.chains[i]:
                            if value.startswith(prefix):
                                allowed |= prefix_bits
                                break
            bits &= allowed
            if not bits:
                return None
        while bits:
            lowest = bits & -bits
            entry = entries[lowest.bit_length() - 1]
            if entry.residual is None or entry.residual(request):
                return entry.hit
            bits ^= lowest
        return None


def _index_block(
    block: RouteMatch | None, bit: int, builders: dict[str, _ColumnBuilder]
) -> RequestPredicate | None:
    """Put ``block``'s indexable conditions into the columns; return what is left to test.

    A condition the index answers exactly (exact/prefix/present on the path,
    method or a header) leaves nothing to test; a regex narrows through its
    literal prefixes but is still tested. At most one condition per column
    and block is indexed; any further one stays in the residual predicate.
    """
    if block is None:  # no blocks: istiod emits ``prefix: "/"`` and nothing else
        builders[_PATH].add_prefix(DEFAULT_PREFIX, bit)
        return None
    residual: list[Condition] = []
    used: set[str] = set()
    for cond in conditions(block):
        sm = cond.match
        if cond.field == "uri":
            column = _PATH_CI if sm.ignore_case and sm.kind in ("exact", "prefix") else _PATH
        elif cond.field == "method":
            column = _METHOD
        elif cond.field == "header":
            column = cond.name
        else:
            residual.append(cond)
            continue
        if column in used or (sm.ignore_case and sm.kind != "regex" and column != _PATH_CI):
            residual.append(cond)
            continue
        used.add(column)
        builder = builders.get(column)
        if builder is None:
            builder = builders[column] = _ColumnBuilder(column, _HEADER)
        key = sm.value.lower() if column == _PATH_CI else sm.value
        if sm.kind == "exact":
            builder.add_exact(key, bit)
        elif sm.kind == "prefix":
            builder.add_prefix(key, bit)
        elif sm.kind == "present":
            builder.add_present(bit)
        else:  # regex: narrow by literal prefixes (if any), and test it
            residual.append(cond)
            compile_string_match(sm)  # surface a bad pattern now, located, not at request time
            for literal in regex_literal_prefixes(sm.value):
                builder.add_prefix(literal, bit)
    if not residual:
        return None
    return compile_conditions(residual)


def _memo_headers(virtual_host: VirtualHost, config_port: int | None) -> tuple[str, ...] | None:
    """Every header a condition of ``virtual_host`` reads, sorted; None if one reads the query string.

    Routing on this host is then a function of (method, scheme, authority,
    path, these headers' values): what a memo of routing decisions keys on.
    """
    names: set[str] = set()
    for route in virtual_host.routes:
        for block in _live_blocks(route, config_port):
            if block is None:
                continue
            for cond in conditions(block):
                if cond.field == "query":
                    return None
                if cond.field in ("header", "without_header"):
                    names.add(cond.name)
    return tuple(sorted(names))


def _live_blocks(route: Route, config_port: int | None) -> Iterable[RouteMatch | None]:
    """The route's blocks that can match on this port; ``(None,)`` for a route without blocks.

    istiod drops a block whose ``port`` differs from the listener port; a
    route all of whose blocks were dropped is not emitted at all.
    """
    if not route.matches:
        return (None,)
    return tuple(m for m in route.matches if m.port is None or config_port is None or m.port == config_port)


def _regex_problem(route: Route, exc: RegexInvalid) -> ConfigProblem:
    src = route.source
    return ConfigProblem(
        file=src.file,
        line=src.line,
        kind="VirtualService",
        name=src.virtual_service or "",
        field=f"spec.http[{src.rule_index}]",
        message=f"invalid regex: {exc}",
    )


class _CompiledRouteConfig:
    """Envoy's virtual host selection for one route configuration."""

    __slots__ = ("config", "default", "exact", "port", "prefix_wildcards", "suffix_wildcards", "vhosts")

    def __init__(self, config: RouteConfiguration) -> None:
        self.config = config
        self.port = int(config.name) if config.name.isdigit() else None
        self.vhosts = tuple(_CompiledVirtualHost(vh, self.port) for vh in config.virtual_hosts)
        exact: dict[str, _CompiledVirtualHost] = {}
        suffix: dict[int, dict[str, _CompiledVirtualHost]] = {}
        prefix: dict[int, dict[str, _CompiledVirtualHost]] = {}
        self.default: _CompiledVirtualHost | None = None
        for compiled in self.vhosts:
            for raw_domain in compiled.virtual_host.domains:
                domain = raw_domain.lower()
                # Envoy rejects duplicate domains; keep the first rather than fail the snapshot.
                if domain == "*":
                    if self.default is None:
                        self.default = compiled
                elif domain.startswith("*"):
                    key = domain[1:]
                    suffix.setdefault(len(key), {}).setdefault(key, compiled)
                elif domain.endswith("*"):
                    key = domain[:-1]
                    prefix.setdefault(len(key), {}).setdefault(key, compiled)
                else:
                    exact.setdefault(domain, compiled)
        self.exact = exact
        # Longest wildcard first: "*-bar.foo.com" beats "*.foo.com" for "x-bar.foo.com".
        self.suffix_wildcards = tuple(sorted(suffix.items(), reverse=True))
        self.prefix_wildcards = tuple(sorted(prefix.items(), reverse=True))

    def find(self, authority: str) -> _CompiledVirtualHost | None:
        host = authority.lower()
        found = self.exact.get(host)
        if found is not None:
            return found
        size = len(host)
        # Strictly shorter: the wildcard must stand for at least one character.
        for length, table in self.suffix_wildcards:
            if length < size:
                found = table.get(host[size - length :])
                if found is not None:
                    return found
        for length, table in self.prefix_wildcards:
            if length < size:
                found = table.get(host[:length])
                if found is not None:
                    return found
        return self.default


class RouteTable:
    """Every route configuration of a snapshot, compiled for the request path.

    Immutable once built; a new snapshot gets a new table. Lookups are keyed
    by the port the request was sent to (route configurations are named by
    port, as istiod names outbound RDS).
    """

    __slots__ = ("__weakref__", "_by_name", "_by_port", "snapshot")

    def __init__(self, snapshot: MeshSnapshot, configs: Iterable[_CompiledRouteConfig]) -> None:
        self.snapshot = snapshot
        self._by_name: dict[str, _CompiledRouteConfig] = {}
        self._by_port: dict[int, _CompiledRouteConfig] = {}
        for compiled in configs:
            self._by_name[compiled.config.name] = compiled
            if compiled.port is not None:
                self._by_port[compiled.port] = compiled

    @classmethod
    def compile(cls, snapshot: MeshSnapshot) -> RouteTable:
        """Compile ``snapshot.route_configs`` (control path).

        Raises :class:`~meshlib.errors.ConfigInvalid` for a regex RE2
        rejects, so a bad snapshot is refused before it is published.
        """
        table = cls(snapshot, (_CompiledRouteConfig(rc) for rc in snapshot.route_configs.values()))
        pickers = [
            WeightedPicker(route)
            for compiled in table._by_name.values()
            for vh in compiled.config.virtual_hosts
            for route in vh.routes
            if len(route.destinations) > 1
        ]
        register_pickers(pickers)
        weakref.finalize(table, unregister_pickers, pickers)
        return table

    # ------------------------------------------------------------------ request path

    def route(self, request: RequestView, port: int) -> RouteHit | None:
        """The first route matching ``request`` sent to ``port``; ``None`` → answer 404 / no route."""
        compiled = self._by_port.get(port)
        if compiled is None:
            return None
        # Domains are lower-case, so a direct hit needs no lower(); find() does the rest.
        vhost = compiled.exact.get(request.authority) or compiled.find(request.authority)
        if vhost is None:
            return None
        return vhost.route(request)

    def memo_headers(self, authority: str, port: int) -> tuple[str, ...] | None:
        """The headers routing a request for ``authority`` on ``port`` reads; None: it reads the query too.

        :meth:`route` is a pure function of the request's method, scheme,
        authority, path and the values of these headers (joined as Envoy
        joins repeats), so a memo keyed on them returns what :meth:`route`
        would. ``()`` when no virtual host matches (no route, whatever the request).
        """
        compiled = self._by_port.get(port)
        if compiled is None:
            return ()
        vhost = compiled.exact.get(authority) or compiled.find(authority)
        return () if vhost is None else vhost.memo_headers

    # ------------------------------------------------------------------ diagnostics

    def route_config_names(self) -> list[str]:
        """Names of the compiled route configurations (the ports, as text), sorted."""
        return sorted(self._by_name)

    def route_configuration(self, port: int) -> RouteConfiguration | None:
        compiled = self._by_port.get(port)
        return compiled.config if compiled is not None else None

    def virtual_hosts(self, port: int) -> tuple[VirtualHost, ...]:
        compiled = self._by_port.get(port)
        return compiled.config.virtual_hosts if compiled is not None else ()

    def virtual_host(self, authority: str, port: int) -> VirtualHost | None:
        """The virtual host ``authority`` selects on ``port`` (exact, wildcards, then ``*``)."""
        compiled = self._by_port.get(port)
        if compiled is None:
            return None
        vhost = compiled.find(authority)
        return vhost.virtual_host if vhost is not None else None

    def has_virtual_host(self, authority: str, port: int) -> bool:
        """Whether ``authority`` on ``port`` is a known host (so a miss is a 404, not passthrough)."""
        return self.virtual_host(authority, port) is not None

    def match_trace(self, request: RequestView, port: int) -> list[tuple[RouteHit, bool]]:
        """Every (route, block) of the selected virtual host in order, with whether it matches.

        The slow, exhaustive counterpart of :meth:`route` for explain and
        debugging: it evaluates every block fully, without the index.
        """
        compiled = self._by_port.get(port)
        vhost = compiled.find(request.authority) if compiled is not None else None
        if vhost is None:
            return []
        trace = []
        for entry in vhost.entries:
            block = entry.hit.matched
            matches = (
                request.path.startswith(DEFAULT_PREFIX) if block is None else compile_match(block)(request)
            )
            trace.append((entry.hit, matches))
        return trace

    def __repr__(self) -> str:
        entries = sum(len(vh.entries) for c in self._by_name.values() for vh in c.vhosts)
        configs = len(self._by_name)
        return f"RouteTable(version={self.snapshot.version!r}, configs={configs}, entries={entries})"
