"""Safe, strict YAML loading straight from the parser's event stream.

PyYAML's loaders first build a node tree of the whole file (with two position marks per
node), then Python objects from it: for a 10,000-target config that tree peaks at ~40 MB,
memory the process keeps for the rest of its life. Building objects event by event keeps
the peak near the size of the result (bench/config_and_gzip.py: 10,000 targets load in 0.3 s
and leave 37 MB of RSS, against 0.6 s and 78 MB for libyaml's CSafeLoader with a strict
constructor). Semantics are those of ``yaml.safe_load`` (same resolver and scalar
constructors, anchors, aliases), with three differences that suit a config file: a key given
twice in one mapping is an error (a merged-in key may be overridden), collection tags such as
``!!set`` are refused, and merge keys follow the YAML merge-key specification
(https://yaml.org/type/merge.html) whatever PyYAML version is installed: explicit keys win over
merged ones, and in ``<<: [*a, *b]`` the earlier mapping wins (PyYAML 6.0.4's ``safe_load``
lets the later one win).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import yaml
from yaml.constructor import ConstructorError
from yaml.error import Mark
from yaml.events import (
    AliasEvent,
    CollectionStartEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from yaml.nodes import ScalarNode

if TYPE_CHECKING:  # libyaml's compiled module: only its type, and only where PyYAML has it
    from yaml._yaml import Mark as _CMark

# libyaml's parser when PyYAML has it (its wheels do): about five times faster than the pure-Python one.
_Loader: type[yaml.CSafeLoader | yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAP_TAGS = (None, "!", "tag:yaml.org,2002:map")
_SEQ_TAGS = (None, "!", "tag:yaml.org,2002:seq")
_NO_KEY = object()


# A position in the text: PyYAML's own Mark, or libyaml's (yaml._yaml.Mark) from CSafeLoader.
_AnyMark: TypeAlias = "Mark | _CMark"


def _error(problem: str, mark: _AnyMark | None) -> ConstructorError:
    """A ConstructorError at ``mark``. PyYAML's own composer passes libyaml's marks to its errors too
    (both have the name, line and column the message and exporter.core.configfile read), but
    types-PyYAML declares ConstructorError's mark as the pure-Python Mark only."""
    return ConstructorError(None, None, problem, mark)  # type: ignore[arg-type]  # libyaml's Mark, see above


class _Mapping:
    __slots__ = ("value", "key", "key_mark", "merged")

    def __init__(self) -> None:
        self.value: dict[Any, Any] = {}
        self.key: Any = _NO_KEY
        self.key_mark: _AnyMark | None = None
        self.merged: list[dict[Any, Any]] = []  # from '<<', in order of precedence

    def add(self, item: Any, mark: _AnyMark | None) -> None:
        if self.key is _NO_KEY:
            try:
                hash(item)
            except TypeError:
                raise _error("a mapping key must be a scalar", mark) from None
            self.key, self.key_mark = item, mark
            return
        key, self.key = self.key, _NO_KEY
        if key is _MergeKey:
            sources = item if isinstance(item, list) else [item]
            if not all(isinstance(source, dict) for source in sources):
                raise _error("a merge key ('<<') needs a mapping or a list of mappings", self.key_mark)
            self.merged += sources
        elif key in self.value:
            raise _error(f"duplicate key {key!r}", self.key_mark)
        else:
            self.value[key] = item

    def finish(self) -> dict[Any, Any]:
        if not self.merged:
            return self.value
        explicit = dict(self.value)
        self.value.clear()  # keep the same object: an anchor may already point at it
        for source in reversed(self.merged):
            self.value.update(source)
        self.value.update(explicit)
        return self.value


class _MergeKey:
    """Marker for the '<<' key."""


def load(text: str) -> Any:
    """Parse one YAML document; raises ``yaml.YAMLError`` (with a problem mark) on any problem."""
    loader = _Loader(text)
    try:
        return _build(loader)
    finally:
        loader.dispose()


def _build(loader: yaml.CSafeLoader | yaml.SafeLoader) -> Any:
    stack: list[_Mapping | list[Any]] = []
    anchors: dict[str, Any] = {}
    document: Any = None
    documents = 0
    while loader.check_event():
        event = loader.get_event()
        if event is None:  # check_event() said there is one; libyaml's stub allows None
            break
        if isinstance(event, (StreamStartEvent, StreamEndEvent, DocumentEndEvent)):
            continue
        if isinstance(event, DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise _error("expected a single document, found another", event.start_mark)
            continue
        if isinstance(event, MappingStartEvent):
            _check_tag(event, _MAP_TAGS)
            frame = _Mapping()
            _anchor(anchors, event, frame.value)
            stack.append(frame)
            continue
        if isinstance(event, SequenceStartEvent):
            _check_tag(event, _SEQ_TAGS)
            items: list[Any] = []
            _anchor(anchors, event, items)
            stack.append(items)
            continue
        if isinstance(event, (MappingEndEvent, SequenceEndEvent)):
            done = stack.pop()
            value = done.finish() if isinstance(done, _Mapping) else done
        elif isinstance(event, AliasEvent):
            if event.anchor not in anchors:
                raise _error(f"found undefined alias {event.anchor!r}", event.start_mark)
            value = anchors[event.anchor]
        elif isinstance(event, ScalarEvent):
            value = _scalar(loader, event)
            _anchor(anchors, event, value)
        else:  # pragma: no cover - PyYAML has no other event types
            raise _error(f"unexpected {type(event).__name__}", event.start_mark)
        if not stack:
            document = value
        elif isinstance(stack[-1], _Mapping):
            stack[-1].add(value, event.start_mark)
        else:
            stack[-1].append(value)
    return document


def _anchor(anchors: dict[str, Any], event: NodeEvent, value: Any) -> None:
    if event.anchor is not None:
        anchors[event.anchor] = value


def _check_tag(event: CollectionStartEvent, allowed: tuple[str | None, ...]) -> None:
    if event.tag not in allowed:
        raise _error(f"unsupported tag {event.tag!r} in a configuration file", event.start_mark)


def _scalar(loader: yaml.CSafeLoader | yaml.SafeLoader, event: ScalarEvent) -> Any:
    tag = event.tag
    if tag is None or tag == "!":
        tag = loader.resolve(ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]  # untyped stub
    if tag == _MERGE_TAG:
        return _MergeKey
    # The constructors read the node's marks only for their errors: libyaml's serve as well (see _error).
    marks = event.start_mark, event.end_mark
    node = ScalarNode(tag, event.value, *marks, style=event.style)  # type: ignore[arg-type]  # libyaml's Mark
    construct = loader.yaml_constructors.get(tag)
    if construct is None:
        raise _error(f"unsupported tag {tag!r} in a configuration file", event.start_mark)
    try:
        return construct(loader, node)
    except (ValueError, KeyError, AttributeError, TypeError, OverflowError):
        # e.g. "!!float x", "!!bool maybe", "!!timestamp never": PyYAML's constructors raise plain errors.
        raise _error(f"{event.value[:50]!r} is not a valid {tag.rsplit(':', 1)[-1]}", event.start_mark) from None
