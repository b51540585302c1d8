"""YAML documents as small trees that remember the line of every value.

PyYAML's composer already records where each node starts; we keep that and
drop everything else, so validation can say ``file:line`` for any field.
Scalars are typed by the safe loader's resolver (``80`` is an int, ``true`` a
bool, ``1.5`` a float); mapping *keys* keep their source text, because YAML 1.1
would otherwise turn a label key such as ``on`` into ``True``.

A value found under a mapping key carries the key's line: an error about
``spec.trafficPolicy`` then points at the ``trafficPolicy:`` line, not at the
first line of its body.

Hostile input is bounded, for every document (including kinds meshlib then
ignores), before anything else looks at it:

- aliases: a YAML graph is shared, but the tree built here is not, so each
  alias use copies its target. At most :data:`MAX_ALIAS_NODES` values may be
  produced through aliases per file (plus one per distinct value, so a file
  that reuses a label map on every endpoint is fine); a "billion laughs"
  document stops there with ``excessive YAML aliasing`` instead of eating memory.
- :data:`MAX_DOCUMENT_NODES` values per document, :data:`MAX_FILE_NODES` per file,
  :data:`MAX_DEPTH` levels of nesting (libyaml itself stops flow nesting at 1000).
- The file size limit is applied by the caller (:mod:`meshlib.config.files`).

Every limit is reported as a :class:`YamlError` with the line where it was
crossed; parsing of that file stops there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

Scalar = str | int | float | bool | None
_STR_TAG = "tag:yaml.org,2002:str"
_NO_MAPPING: dict[str, Node] = {}
_NO_SEQUENCE: list[Node] = []

MAX_ALIAS_NODES = 10_000
MAX_DOCUMENT_NODES = 500_000
MAX_FILE_NODES = 1_000_000
MAX_DEPTH = 100
_PLAIN_TAG = "meshlib:plain"  # a plain (unquoted, untagged) scalar, typed by _plain_value
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
# The YAML 1.1 implicit types the safe loader knows, by first character.
_IMPLICIT: dict[str, list[tuple[str, Any]]] = yaml.resolver.Resolver.yaml_implicit_resolvers


class _PlainResolver(BaseResolver):
    """Leaves plain scalars untyped (:data:`_PLAIN_TAG`) so the converter types only the ones it keeps.

    The safe loader's resolver runs its regexes on every scalar inside the
    composer; here most plain values (names, addresses, hosts) are settled by
    a first-character check, and base-60 numbers are not produced at all.
    """

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return _MERGE_TAG if value == "<<" else _PLAIN_TAG
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]


def _loader_class() -> type[Any]:
    try:
        from yaml.cyaml import CParser as cparser  # type: ignore[attr-defined]
    except ImportError:  # PyYAML without libyaml: the pure-Python reader

        class PyLoader(Reader, Scanner, Parser, Composer, SafeConstructor, _PlainResolver):
            def __init__(self, stream: str) -> None:
                Reader.__init__(self, stream)
                Scanner.__init__(self)
                Parser.__init__(self)
                Composer.__init__(self)
                SafeConstructor.__init__(self)
                _PlainResolver.__init__(self)

        return PyLoader

    class CLoader(cparser, SafeConstructor, _PlainResolver):
        # libyaml's C parser and composer (marks kept) — ~10x the pure-Python reader.
        def __init__(self, stream: str) -> None:
            cparser.__init__(self, stream)
            SafeConstructor.__init__(self)
            _PlainResolver.__init__(self)

    return CLoader


_Loader = _loader_class()


def _plain_tag(value: str) -> str:
    """The tag the safe loader would give the plain scalar ``value``, minus YAML 1.1's base 60.

    YAML 1.1 reads ``1:2:3:4:5:6:7:8`` (an IPv6 address) or ``10:30`` as base-60
    numbers; Kubernetes' YAML reader (go-yaml) and YAML 1.2 keep them as text,
    and so does meshlib.
    """
    for tag, pattern in _IMPLICIT.get(value[:1], ()):
        if pattern.match(value):
            if ":" in value and tag in (_INT_TAG, _FLOAT_TAG):
                return _STR_TAG
            return str(tag)
    return _STR_TAG


def _scalar_tag(node: yaml.ScalarNode) -> str:
    return _plain_tag(node.value) if node.tag == _PLAIN_TAG else str(node.tag)


class YamlLimitExceeded(Exception):
    """A size limit was crossed at ``line``; parsing of the file stops."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass(slots=True)
class Node:
    """One YAML value. Exactly one of ``mapping``/``sequence``/``scalar`` applies (see ``kind``)."""

    kind: str  # "map" | "seq" | "scalar"
    line: int
    # Scalars share one empty dict/list (never mutated) instead of allocating their own:
    # a 10,000-endpoint file has ~50,000 scalars.
    mapping: dict[str, Node] = field(default_factory=lambda: _NO_MAPPING)
    sequence: list[Node] = field(default_factory=lambda: _NO_SEQUENCE)
    scalar: Scalar = None

    @property
    def type_name(self) -> str:
        """The YAML type, for "expected X, got Y" messages."""
        if self.kind == "map":
            return "mapping"
        if self.kind == "seq":
            return "list"
        return scalar_type_name(self.scalar)


def scalar_type_name(value: Scalar) -> str:
    """Human name of a scalar's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """One ``---`` document of a file: its tree (None when empty) and first line."""

    root: Node | None
    line: int


@dataclass(frozen=True, slots=True)
class YamlError:
    """A syntax or structure problem found while reading YAML."""

    line: int
    message: str


class _Converter:
    """Turns composed ``yaml.Node`` graphs into :class:`Node` trees, within the limits."""

    def __init__(self) -> None:
        self._constructor = SafeConstructor()
        self.errors: list[YamlError] = []
        self._open: set[int] = set()  # containers being converted (alias cycle detection)
        self._seen: set[int] = set()  # containers converted before: meeting one again is an alias use
        self._alias_depth = 0  # > 0 while copying an alias target
        self._alias_line = 0  # where the outermost alias being copied is used
        self.alias_nodes = 0
        self.file_nodes = 0
        self.document_nodes = 0

    def document(self, node: yaml.Node, line: int) -> Node:
        self.document_nodes = 0
        self.file_nodes += 1
        # ids are only unique among live objects: the previous document's graph is gone, and its
        # ids may be reused, so alias detection starts afresh (aliases cannot cross documents).
        self._seen = set()
        return self.convert(node, line, 0)

    def _count(self, at: int, values: int) -> None:
        """Count ``values`` values about to be built (a container and its entries)."""
        self.document_nodes += values
        self.file_nodes += values
        if self._alias_depth:
            self.alias_nodes += values
            # Reusing a map on every entry is fine; an alias tree that outgrows the file is a bomb.
            if self.alias_nodes > MAX_ALIAS_NODES + self.file_nodes - self.alias_nodes:
                raise YamlLimitExceeded(
                    self._alias_line or at,
                    f"excessive YAML aliasing: more than {MAX_ALIAS_NODES} values produced through aliases",
                )
        if self.document_nodes > MAX_DOCUMENT_NODES:
            raise YamlLimitExceeded(at, f"YAML document too large: more than {MAX_DOCUMENT_NODES} values")
        if self.file_nodes > MAX_FILE_NODES:
            raise YamlLimitExceeded(at, f"YAML file too large: more than {MAX_FILE_NODES} values")

    def convert(self, node: yaml.Node, line: int | None = None, depth: int = 0) -> Node:
        at = line if line is not None else node.start_mark.line + 1
        # Scalars are counted by their container (one call per container, not per value).
        if type(node) is yaml.ScalarNode:
            tag = node.tag
            if tag == _PLAIN_TAG:
                value: str = node.value
                if value[:1] not in _IMPLICIT:  # most plain values are names, addresses, hosts
                    return Node("scalar", at, _NO_MAPPING, _NO_SEQUENCE, value)
                tag = node.tag = _plain_tag(value)
            if tag == _STR_TAG:
                return Node("scalar", at, _NO_MAPPING, _NO_SEQUENCE, node.value)
            return Node("scalar", at, _NO_MAPPING, _NO_SEQUENCE, self._scalar(node, at))
        if depth >= MAX_DEPTH:
            raise YamlLimitExceeded(at, f"YAML nested deeper than {MAX_DEPTH} levels")
        # Aliases can make the graph recursive; a recursive value is never valid config.
        key = id(node)
        if key in self._open:
            self.errors.append(YamlError(at, "recursive YAML alias"))
            return Node("scalar", at)
        alias = key in self._seen
        self._seen.add(key)
        self._open.add(key)
        if alias and not self._alias_depth:
            self._alias_line = at
        self._alias_depth += alias
        self._count(at, 1 + len(node.value))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, at, depth)
            return Node("seq", at, _NO_MAPPING, [self.convert(item, None, depth + 1) for item in node.value])
        finally:
            self._open.discard(key)
            self._alias_depth -= alias

    def _scalar(self, node: yaml.ScalarNode, at: int) -> Scalar:
        try:
            value = self._constructor.construct_object(node, deep=True)
        except (ConstructorError, ValueError, OverflowError) as exc:
            self.errors.append(YamlError(at, f"invalid YAML value: {exc}"))
            return None
        if not isinstance(value, str | int | float | bool) and value is not None:
            # Timestamps, binary and other tagged values: keep the text, the schema decides.
            return str(node.value)
        return value

    def _mapping(self, node: yaml.MappingNode, at: int, depth: int) -> Node:
        merged = 0
        merges = 0
        for key, _ in node.value:  # a plain loop: most mappings have no merge key and pay one pass
            if key.tag == _MERGE_TAG:
                merges += 1
        if merges:
            own = len(node.value) - merges
            try:
                self._constructor.flatten_mapping(node)  # resolve "<<" merge keys
            except ConstructorError as exc:
                self.errors.append(YamlError(at, f"invalid YAML merge: {exc.problem}"))
            # flatten_mapping puts merged entries first; YAML lets later ones (and the
            # mapping's own keys) override them, so only own duplicates are errors.
            merged = len(node.value) - own
        out = Node("map", at, {}, _NO_SEQUENCE)
        own_keys: set[str] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.errors.append(YamlError(key_line, "mapping keys must be plain strings"))
                continue
            key = str(key_node.value)
            if key in own_keys:
                self.errors.append(YamlError(key_line, f'duplicate key "{key}"'))
                continue
            copied = index < merged  # merged entries are copies of another mapping: alias output
            if not copied:
                own_keys.add(key)
            self._alias_depth += copied
            try:
                out.mapping[key] = self.convert(value_node, key_line, depth + 1)
            finally:
                self._alias_depth -= copied
        return out


def parse_yaml(text: str) -> tuple[list[YamlDocument], list[YamlError]]:
    """Parse every document of ``text``.

    A syntax error ends parsing at that point: the documents before it are
    returned along with the error (with its line), never an exception.
    """
    converter = _Converter()
    documents: list[YamlDocument] = []
    try:
        for composed in yaml.compose_all(text, Loader=_Loader):
            if composed is None:
                continue
            line = composed.start_mark.line + 1
            if isinstance(composed, yaml.ScalarNode) and _scalar_tag(composed).endswith(":null"):
                documents.append(YamlDocument(None, line))
                continue
            documents.append(YamlDocument(converter.document(composed, line), line))
    except YamlLimitExceeded as exc:
        converter.errors.append(YamlError(exc.line, exc.message))
    except RecursionError:
        converter.errors.append(YamlError(0, f"YAML nested deeper than {MAX_DEPTH} levels"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        reason = exc.problem or exc.context or "invalid YAML"
        converter.errors.append(YamlError(line, f"YAML syntax error: {reason}"))
    except yaml.YAMLError as exc:  # e.g. reader errors on control characters
        converter.errors.append(YamlError(0, f"YAML syntax error: {exc}"))
    return documents, converter.errors
