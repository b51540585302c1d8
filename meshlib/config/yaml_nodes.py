"""YAML documents as small trees that remember the line of every value.

PyYAML's composer already records where each node starts; we keep that and
drop everything else, so validation can say ``file:line`` for any field.
Scalars are typed by the safe loader's resolver (``80`` is an int, ``true`` a
bool, ``1.5`` a float); mapping *keys* keep their source text, because YAML 1.1
would otherwise turn a label key such as ``on`` into ``True``.

A value found under a mapping key carries the key's line: an error about
``spec.trafficPolicy`` then points at the ``trafficPolicy:`` line, not at the
first line of its body.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

Scalar = str | int | float | bool | None
_STR_TAG = "tag:yaml.org,2002:str"
_NO_MAPPING: dict[str, Node] = {}
_NO_SEQUENCE: list[Node] = []

# libyaml is ~10x faster than the pure-Python parser on large endpoint lists.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
    """Turns composed ``yaml.Node`` graphs into :class:`Node` trees."""

    def __init__(self) -> None:
        self._constructor = SafeConstructor()
        self.errors: list[YamlError] = []
        self._open: set[int] = set()  # containers being converted (alias cycle detection)

    def convert(self, node: yaml.Node, line: int | None = None) -> Node:
        at = line if line is not None else node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR_TAG:  # fast path: most values are plain strings
                return Node("scalar", at, scalar=node.value)
            return Node("scalar", at, scalar=self._scalar(node, at))
        # Aliases can make the graph recursive; a recursive value is never valid config.
        key = id(node)
        if key in self._open:
            self.errors.append(YamlError(at, "recursive YAML alias"))
            return Node("scalar", at)
        self._open.add(key)
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, at)
            return Node("seq", at, sequence=[self.convert(item) for item in node.value])
        finally:
            self._open.discard(key)

    def _scalar(self, node: yaml.ScalarNode, at: int) -> Scalar:
        try:
            value = self._constructor.construct_object(node, deep=True)
        except (ConstructorError, ValueError) as exc:
            self.errors.append(YamlError(at, f"invalid YAML value: {exc}"))
            return None
        if not isinstance(value, str | int | float | bool) and value is not None:
            # Timestamps, binary and other tagged values: keep the text, the schema decides.
            return str(node.value)
        return value

    def _mapping(self, node: yaml.MappingNode, at: int) -> Node:
        own = sum(1 for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge")
        try:
            self._constructor.flatten_mapping(node)  # resolve "<<" merge keys
        except ConstructorError as exc:
            self.errors.append(YamlError(at, f"invalid YAML merge: {exc.problem}"))
        # flatten_mapping puts merged entries first; YAML lets later ones (and the
        # mapping's own keys) override them, so only own duplicates are errors.
        merged = len(node.value) - own
        out = Node("map", at, mapping={})
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
            if index >= merged:
                own_keys.add(key)
            out.mapping[key] = self.convert(value_node, key_line)
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
            if isinstance(composed, yaml.ScalarNode) and composed.tag.endswith(":null"):
                documents.append(YamlDocument(None, line))
                continue
            documents.append(YamlDocument(converter.convert(composed, line), line))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        reason = exc.problem or exc.context or "invalid YAML"
        converter.errors.append(YamlError(line, f"YAML syntax error: {reason}"))
    except yaml.YAMLError as exc:  # e.g. reader errors on control characters
        converter.errors.append(YamlError(0, f"YAML syntax error: {exc}"))
    return documents, converter.errors
