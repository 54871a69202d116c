"""Find scalars in YAML text by position, so an edit replaces only their bytes.

ruamel.yaml's composer gives every node the character offsets it was read
from. Editing those characters in the original text, instead of dumping a
modified tree, keeps comments, quoting, indentation and line endings exactly
as they were (Renovate edits files the same way).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from config.errors import PinError


@dataclass(frozen=True)
class Span:
    """Where a version is written: `text[start:end] == value`.

    `scalar_start`/`scalar_end` delimit the whole YAML scalar (quotes included);
    `whole` says the version is the entire scalar, so quoting may be added.
    `insert` is set when the key is missing: the text to insert at `start`,
    with `{}` where the version goes (an empty `value` is read then).
    """

    start: int
    end: int
    value: str
    scalar_start: int = -1
    scalar_end: int = -1
    style: str | None = None
    whole: bool = False
    insert: str | None = None


def documents(text: str, file: str) -> list[Node]:
    """The YAML documents of `text` as nodes with their character offsets: composed by
    libyaml (ruamel.yaml.clib) where it is installed, ten times faster than pure Python on a
    large file. libyaml reads YAML 1.1, which refuses a few things 1.2 allows (`[a:b]` in a
    flow sequence); such a file is composed again by ruamel's own parser."""
    try:
        fast = YAML(typ="safe", pure=False)
        return [doc for doc in fast.compose_all(text) if doc is not None]
    except YAMLError:
        pass
    try:
        return [doc for doc in YAML().compose_all(text) if doc is not None]
    except YAMLError as exc:
        raise PinError(f"{file} is not valid YAML: {_first_line(exc)}") from exc


def _first_line(exc: YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (libyaml's text spans several)."""
    words = " ".join(str(exc).split())
    return words[:300]


def mapping_get(node: Node, key: str) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    found = [v for k, v in node.value if isinstance(k, ScalarNode) and k.value == key]
    return found[0] if len(found) == 1 else None


def sequence_items(node: Node | None) -> Iterator[Node]:
    if isinstance(node, SequenceNode):
        yield from node.value


def scalar_value(node: Node | None) -> str | None:
    return node.value if isinstance(node, ScalarNode) else None


def line_end(text: str, index: int) -> int:
    """The index just before the line break of the line holding `index`."""
    end = text.find("\n", index)
    end = len(text) if end == -1 else end
    return end - 1 if end > 0 and text[end - 1] == "\r" else end


def newline_of(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def scalar_span(text: str, node: ScalarNode, file: str, prefix: str = "") -> Span:
    """The span of `node`'s value after `prefix`, checked to be written literally in `text`."""
    start, end = node.start_mark.index, node.end_mark.index
    raw = text[start:end]
    inner_start, inner_end = start, end
    style = node.style or None  # libyaml says '' for a plain scalar, pure Python None
    if style in ("'", '"'):
        inner_start, inner_end = start + 1, end - 1
    elif style is not None:
        raise PinError(f"{file}: block scalar {raw[:40]!r} cannot hold a version")
    if text[inner_start:inner_end] != node.value:
        raise PinError(f"{file}: {raw[:60]!r} uses escapes or line folding; write it plainly")
    if not node.value.startswith(prefix):
        raise PinError(f"{file}: {raw[:60]!r} does not start with {prefix!r}")
    return Span(
        start=inner_start + len(prefix),
        end=inner_end,
        value=node.value[len(prefix) :],
        scalar_start=start,
        scalar_end=end,
        style=style,
        whole=not prefix,
    )


_YAML11_SPECIAL = {
    "y",
    "yes",
    "n",
    "no",
    "true",
    "false",
    "on",
    "off",
    "null",
    "~",
}


def reads_as_string(value: str) -> bool:
    """True when `value` written as a plain scalar stays the same string in YAML 1.1 and 1.2."""
    if value.lower() in _YAML11_SPECIAL:
        return False
    for version in ((1, 1), (1, 2)):
        loader = YAML(typ="safe", pure=True)
        loader.version = version
        try:
            with warnings.catch_warnings():  # ruamel warns about YAML 1.1 floats like 1e3
                warnings.simplefilter("ignore")
                if loader.load(f"k: {value}\n") != {"k": value}:
                    return False
        except YAMLError:
            return False
    return True


def replace(text: str, span: Span, version: str) -> str:
    """Write `version` into `span`, quoting it when a plain scalar would change its type."""
    if span.insert is not None:
        value = version if reads_as_string(version) else f'"{version}"'
        return text[: span.start] + span.insert.format(value) + text[span.start :]
    if span.whole and span.style is None and not reads_as_string(version):
        return text[: span.scalar_start] + f'"{version}"' + text[span.scalar_end :]
    return text[: span.start] + version + text[span.end :]
