"""`terraform_module` pins: the `?ref=` of a module's `source`, or a registry module's `version`.

Finds `module "NAME" {` and its closing brace (skipping braces inside
strings and comments), then the `source = "..."` or `version = "..."`
attribute at the block's own level.
"""

from __future__ import annotations

import re

from config.errors import PinAmbiguous, PinError, PinNotFound
from workers.pins.yamltext import Span

_ATTRIBUTE = r'^[ \t]*{name}[ \t]*=[ \t]*"(?P<value>[^"\n]*)"'


def _block_end(text: str, open_brace: int, file: str, name: str) -> int:
    depth, i, in_string = 0, open_brace, False
    while i < len(text):
        char = text[i]
        if in_string:
            if char == "\\":
                i += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "#" or text.startswith("//", i):
            newline = text.find("\n", i)
            i = len(text) if newline == -1 else newline
            continue
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise PinError(f"{file}: module {name!r} has no closing brace")


def _module_body(text: str, file: str, name: str) -> tuple[int, int]:
    header = re.compile(rf'^[ \t]*module[ \t]+"{re.escape(name)}"[ \t]*\{{', re.MULTILINE)
    matches = list(header.finditer(text))
    if not matches:
        found = re.findall(r'^[ \t]*module[ \t]+"([^"]+)"', text, re.MULTILINE)
        raise PinNotFound(f"{file}: no module {name!r} (found: {', '.join(found) or 'none'})")
    if len(matches) > 1:
        raise PinAmbiguous(f"{file}: module {name!r} appears {len(matches)} times")
    start = matches[0].end() - 1
    return start, _block_end(text, start, file, name)


def _top_level_attribute(text: str, start: int, end: int, attribute: str) -> list[re.Match[str]]:
    """Matches of `attribute = "..."` in the block, not inside nested blocks."""
    pattern = re.compile(_ATTRIBUTE.format(name=re.escape(attribute)), re.MULTILINE)
    found = []
    for match in pattern.finditer(text, start + 1, end):
        before = text[start + 1 : match.start()]
        if before.count("{") == before.count("}"):
            found.append(match)
    return found


def module_ref(text: str, file: str, name: str, part: str | None = None) -> Span:
    start, end = _module_body(text, file, name)
    attribute = "version" if part == "version" else "source"
    matches = _top_level_attribute(text, start, end, attribute)
    if not matches:
        raise PinNotFound(f'{file}: module {name!r} has no {attribute} = "..."')
    if len(matches) > 1:
        raise PinAmbiguous(f"{file}: module {name!r} sets {attribute} {len(matches)} times")
    value_start, value_end = matches[0].span("value")
    if attribute == "version":
        return Span(start=value_start, end=value_end, value=text[value_start:value_end])
    source = text[value_start:value_end]
    ref = re.search(r"[?&]ref=([^&]*)", source)
    if ref is None:
        raise PinNotFound(f"{file}: the source of module {name!r} has no ?ref= ({source})")
    return Span(start=value_start + ref.start(1), end=value_start + ref.end(1), value=ref.group(1))
