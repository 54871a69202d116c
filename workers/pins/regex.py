"""`regex` pins, the escape hatch: a pattern with one named group `version`, matching once."""

from __future__ import annotations

import re

from config.errors import PinAmbiguous, PinNotFound
from workers.pins.yamltext import Span


def regex(text: str, file: str, pattern: str, part: str | None = None) -> Span:
    matches = list(re.compile(pattern, re.MULTILINE).finditer(text))
    if not matches:
        raise PinNotFound(f"{file}: nothing matches {pattern!r}")
    if len(matches) > 1:
        lines = ", ".join(str(text.count("\n", 0, m.start()) + 1) for m in matches)
        raise PinAmbiguous(f"{file}: {pattern!r} matches {len(matches)} times (lines {lines})")
    start, end = matches[0].span("version")
    return Span(start=start, end=end, value=text[start:end])
