"""Graph passes over a discovery chain's nodes, as ``compile.go`` runs them after assembly.

- :func:`detect_cycles`: a router/splitter graph that loops is an error;
- :func:`flatten_splitters`: a split leading to another splitter is replaced by
  that splitter's splits (weights multiplied, header modifiers merged as
  ``ServiceSplit.MergeParent``);
- :func:`remove_unused`: nodes no longer reachable from the start are dropped.
"""

from __future__ import annotations

from dataclasses import replace

from meshlib.discovery.consul.chain_types import Node, Split
from meshlib.discovery.consul.entry_types import HeaderModifiers

MAX_FLAT_SPLITS = 1024


class ChainError(Exception):
    """The chain cannot be compiled; ``kind``/``name`` is the config entry to blame, ``field`` where."""

    def __init__(self, message: str, kind: str, name: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.name = name
        self.field = field


def detect_cycles(nodes: dict[str, Node], start: str) -> None:
    """Depth-first search with three colours: a node reached again while on the path is a cycle."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(key: str) -> None:
        if key in done:
            return
        if key in on_path:
            node = nodes[path[-1]]
            kind, _, name = node.entry.partition("/")
            raise ChainError(f"detected circular reference: [{' -> '.join([*path, key])}]",
                             kind or "service-splitter", name or node.name, "Splits")
        node = nodes[key]
        path.append(key)
        on_path.add(key)
        for nxt in [r.next_node for r in node.routes] + [s.next_node for s in node.splits]:
            visit(nxt)
        path.pop()
        on_path.discard(key)
        done.add(key)

    visit(start)

def flatten_splitters(nodes: dict[str, Node]) -> None:
    changed = True
    while changed:
        changed = False
        for key, node in list(nodes.items()):
            if node.type != "splitter":
                continue
            fixed: list[Split] = []
            touched = False
            for split in node.splits:
                inner = nodes[split.next_node]
                if inner.type != "splitter":
                    fixed.append(split)
                    continue
                touched = True
                for child in inner.splits:
                    fixed.append(Split(
                        weight=_normalize(split.weight * child.weight / 100),
                        next_node=child.next_node,
                        request_headers=merge_headers(split.request_headers, child.request_headers),
                        response_headers=merge_headers(child.response_headers, split.response_headers),
                    ))
            if touched:
                if len(fixed) > MAX_FLAT_SPLITS:
                    kind, _, name = node.entry.partition("/")
                    raise ChainError(f"nested splitters flatten to more than {MAX_FLAT_SPLITS} splits",
                                     kind or "service-splitter", name or node.name, "Splits")
                nodes[key] = replace(node, splits=tuple(fixed))
                changed = True

def remove_unused(nodes: dict[str, Node], start: str) -> None:
    seen: set[str] = set()
    todo = [start]
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        node = nodes[key]
        todo.extend(r.next_node for r in node.routes)
        todo.extend(s.next_node for s in node.splits)
    for key in [k for k in nodes if k not in seen]:
        del nodes[key]


def _normalize(weight: float) -> float:
    return int(weight * 100 + 0.5) / 100


def merge_headers(base: HeaderModifiers | None, overrides: HeaderModifiers | None) -> HeaderModifiers | None:
    """Consul's ``MergeHTTPHeaderModifiers``: ``overrides`` win for Add/Set keys; Remove lists are joined."""
    if base is None:
        return overrides
    if overrides is None:
        return base
    add = dict(base.add) | dict(overrides.add)
    set_ = dict(base.set) | dict(overrides.set)
    remove = list(overrides.remove) + [h for h in base.remove if h not in overrides.remove]
    return HeaderModifiers(tuple(add.items()), tuple(set_.items()), tuple(remove))
