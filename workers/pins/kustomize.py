"""Kustomize pins: an image's `newTag` (or `digest`), and a `configMapGenerator` literal."""

from __future__ import annotations

from collections.abc import Sequence

from ruamel.yaml.nodes import MappingNode, Node, ScalarNode

from config.errors import PinAmbiguous, PinError, PinNotFound
from workers.pins.yamltext import (
    Span,
    documents,
    line_end,
    mapping_get,
    newline_of,
    scalar_span,
    scalar_value,
    sequence_items,
)

IMAGE_KEYS = {"tag": "newTag", "digest": "digest"}


def only(found: Sequence[Node], file: str, what: str, seen: list[str]) -> Node:
    if not found:
        listed = ", ".join(seen) if seen else "none"
        raise PinNotFound(f"{file}: no {what} (found: {listed})")
    if len(found) > 1:
        raise PinAmbiguous(f"{file}: {what} appears {len(found)} times")
    return found[0]


def _named_entries(text: str, file: str, list_key: str, name: str) -> tuple[list[Node], list[str]]:
    entries: list[Node] = []
    names: list[str] = []
    for doc in documents(text, file):
        for entry in sequence_items(mapping_get(doc, list_key)):
            entry_name = scalar_value(mapping_get(entry, "name"))
            if entry_name is not None:
                names.append(entry_name)
            if entry_name == name:
                entries.append(entry)
    return entries, names


def image_tag(text: str, file: str, image: str, part: str | None = None) -> Span:
    key = IMAGE_KEYS[part or "tag"]
    entries, names = _named_entries(text, file, "images", image)
    entry = only(entries, file, f"images entry named {image!r}", names)
    value = mapping_get(entry, key)
    if isinstance(value, ScalarNode):
        return scalar_span(text, value, file)
    if value is not None:
        raise PinError(f"{file}: {key} of images entry {image!r} is not a plain value")
    return _insertion(text, file, entry, key, image)


def _insertion(text: str, file: str, entry: Node, key: str, image: str) -> Span:
    """Where a missing `key: VERSION` line goes: after the entry's `name` line, aligned."""
    if not isinstance(entry, MappingNode) or entry.flow_style:
        raise PinNotFound(f"{file}: images entry {image!r} has no {key}; add it by hand")
    name_key, name_value = next(
        (k, v) for k, v in entry.value if isinstance(k, ScalarNode) and k.value == "name"
    )
    at = line_end(text, name_value.end_mark.index)
    indent = " " * name_key.start_mark.column
    return Span(start=at, end=at, value="", insert=f"{newline_of(text)}{indent}{key}: {{}}")


def configmap_literal(text: str, file: str, generator_key: str, part: str | None = None) -> Span:
    generator, key = generator_key.split("/", 1)
    generators, names = _named_entries(text, file, "configMapGenerator", generator)
    if not generators and _named_entries(text, file, "secretGenerator", generator)[0]:
        raise PinError(
            f"{file}: {generator!r} is a secretGenerator; releasegate does not edit secrets"
        )
    entry = only(generators, file, f"configMapGenerator named {generator!r}", names)
    prefix = f"{key}="
    scalars = [
        n for n in sequence_items(mapping_get(entry, "literals")) if isinstance(n, ScalarNode)
    ]
    literals = [n for n in scalars if n.value.startswith(prefix)]
    keys = [str(n.value).split("=", 1)[0] for n in scalars]
    only(literals, file, f"literal {key}= in {generator!r}", keys)
    return scalar_span(text, literals[0], file, prefix)
