"""Read and write the version a pin holds, changing only the version's bytes.

One locator per pin kind returns the `Span` where the version is written;
reading and writing both go through it, so `status`, `check-config`, the
request's diff and the worker's commit always agree on what a pin holds.
"""

from __future__ import annotations

from collections.abc import Callable

from config.policy import Pin
from workers.pins import kustomize
from workers.pins.yamltext import Span, replace

Locator = Callable[[str, str, str], Span]

LOCATORS: dict[str, Locator] = {
    "kustomize_image": kustomize.image_tag,
    "configmap_literal": kustomize.configmap_literal,
}


def locate(text: str, pin: Pin) -> Span:
    return LOCATORS[pin.kind](text, pin.file, pin.target)


def read_version(text: str, pin: Pin) -> str:
    return locate(text, pin).value


def write_version(text: str, pin: Pin, version: str) -> str:
    return replace(text, locate(text, pin), version)


__all__ = ["Span", "locate", "read_version", "write_version"]
