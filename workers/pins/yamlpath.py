"""`yaml_path` pins: any scalar by path (`image.tag`, `spec.chart.spec.version`,
`dependencies[name=redis].version`, `items[0].tag`), in single- or multi-document files.

A multi-document file (a Flux HelmRelease beside its HelmRepository) is
searched document by document; when more than one document has the path,
the pin's `document` (`Kind` or `Kind/name`) picks one.
"""

from __future__ import annotations

import re

from ruamel.yaml.nodes import Node, ScalarNode, SequenceNode

from config.errors import PinAmbiguous, PinError, PinNotFound
from workers.pins.yamltext import Span, documents, mapping_get, scalar_span, scalar_value

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]|\[([^=\]]+)=([^\]]+)\]")


def parse_path(path: str) -> list[str | int | tuple[str, str]]:
    steps: list[str | int | tuple[str, str]] = []
    position = 0
    while position < len(path):
        if path[position] == "." and steps:
            position += 1
        match = _STEP.match(path, position)
        if match is None:
            raise PinError(f"cannot read yaml_path {path!r} at {path[position:]!r}")
        key, index, select_key, select_value = match.groups()
        if key is not None:
            steps.append(key)
        elif index is not None:
            steps.append(int(index))
        else:
            steps.append((select_key, select_value))
        position = match.end()
    return steps


def _walk(node: Node | None, steps: list[str | int | tuple[str, str]]) -> Node | None:
    for step in steps:
        if node is None:
            return None
        if isinstance(step, str):
            node = mapping_get(node, step)
        elif not isinstance(node, SequenceNode):
            return None
        elif isinstance(step, int):
            node = node.value[step] if step < len(node.value) else None
        else:
            key, value = step
            matches = [item for item in node.value if scalar_value(mapping_get(item, key)) == value]
            node = matches[0] if len(matches) == 1 else None
    return node


def _label(doc: Node) -> str:
    kind = scalar_value(mapping_get(doc, "kind")) or "?"
    name = scalar_value(mapping_get(mapping_get(doc, "metadata") or doc, "name"))
    return f"{kind}/{name}" if name else kind


def _selected(doc: Node, selector: str | None) -> bool:
    if selector is None:
        return True
    label = _label(doc)
    return label == selector or label.split("/", 1)[0] == selector


def yaml_path(
    text: str, file: str, path: str, part: str | None = None, *, document: str | None = None
) -> Span:
    steps = parse_path(path)
    docs = [doc for doc in documents(text, file) if _selected(doc, document)]
    found = [(doc, node) for doc in docs if (node := _walk(doc, steps)) is not None]
    where = f" in {document}" if document else ""
    if not found:
        raise PinNotFound(f"{file}: no {path}{where} ({len(docs)} document(s) searched)")
    if len(found) > 1:
        labels = ", ".join(_label(doc) for doc, _ in found)
        raise PinAmbiguous(f"{file}: {path} is in {len(found)} documents ({labels}); set document")
    node = found[0][1]
    if not isinstance(node, ScalarNode):
        kind = "list" if isinstance(node, SequenceNode) else "mapping"
        raise PinError(f"{file}: {path} is a {kind}, not a version")
    return scalar_span(text, node, file)
