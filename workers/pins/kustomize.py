"""Kustomize pins: an image's `newTag`, and a `configMapGenerator` literal."""

from __future__ import annotations

from collections.abc import Sequence

from ruamel.yaml.nodes import Node, ScalarNode

from config.errors import PinAmbiguous, PinNotFound
from workers.pins.yamltext import (
    Span,
    documents,
    mapping_get,
    scalar_span,
    scalar_value,
    sequence_items,
)


def _only(found: Sequence[Node], file: str, what: str, seen: list[str]) -> Node:
    if not found:
        listed = ", ".join(seen) if seen else "none"
        raise PinNotFound(f"{file}: no {what} (found: {listed})")
    if len(found) > 1:
        raise PinAmbiguous(f"{file}: {what} appears {len(found)} times")
    return found[0]


def image_tag(text: str, file: str, image: str) -> Span:
    entries: list[Node] = []
    names: list[str] = []
    for doc in documents(text, file):
        for entry in sequence_items(mapping_get(doc, "images")):
            name = scalar_value(mapping_get(entry, "name"))
            if name is not None:
                names.append(name)
            if name == image:
                entries.append(entry)
    entry = _only(entries, file, f"images entry named {image!r}", names)
    tag = mapping_get(entry, "newTag")
    if not isinstance(tag, ScalarNode):
        raise PinNotFound(f"{file}: images entry {image!r} has no newTag")
    return scalar_span(text, tag, file)


def configmap_literal(text: str, file: str, generator_key: str) -> Span:
    generator, key = generator_key.split("/", 1)
    generators: list[Node] = []
    names: list[str] = []
    for doc in documents(text, file):
        for entry in sequence_items(mapping_get(doc, "configMapGenerator")):
            name = scalar_value(mapping_get(entry, "name"))
            if name is not None:
                names.append(name)
            if name == generator:
                generators.append(entry)
    entry = _only(generators, file, f"configMapGenerator named {generator!r}", names)
    prefix = f"{key}="
    literals = [
        node
        for node in sequence_items(mapping_get(entry, "literals"))
        if isinstance(node, ScalarNode) and node.value.startswith(prefix)
    ]
    keys = [
        str(n.value).split("=", 1)[0]
        for n in sequence_items(mapping_get(entry, "literals"))
        if isinstance(n, ScalarNode)
    ]
    _only(literals, file, f"literal {key}= in {generator!r}", keys)
    return scalar_span(text, literals[0], file, prefix)
