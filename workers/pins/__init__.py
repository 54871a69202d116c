"""Read and write the version a pin holds, changing only the version's bytes.

One locator per pin kind returns the `Span` where the version is written;
reading and writing both go through it, so `status`, `check-config`, the
request's diff and the worker's commit always agree on what a pin holds.
A pin's `format` (`v{version}`) is applied here, once, for every kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from config.errors import PinError
from config.policy import Pin
from workers.pins import kustomize, regex, terraform, yamlpath
from workers.pins.yamltext import Span, replace

Locator = Callable[[str, str, str, str | None], Span]

LOCATORS: dict[str, Locator] = {
    "kustomize_image": kustomize.image_tag,
    "configmap_literal": kustomize.configmap_literal,
    "terraform_module": terraform.module_ref,
    "regex": regex.regex,
}


def locate(text: str, pin: Pin) -> Span:
    if pin.kind == "yaml_path":
        return yamlpath.yaml_path(text, pin.file, pin.target, document=pin.document)
    return LOCATORS[pin.kind](text, pin.file, pin.target, pin.part)


def _unformat(pin: Pin, written: str) -> str:
    if pin.format == "{version}" or not written:
        return written
    before, after = pin.format.split("{version}")
    match = re.fullmatch(re.escape(before) + "(.*)" + re.escape(after), written)
    if match is None:
        raise PinError(f"{pin.describe()} holds {written!r}, which is not of the form {pin.format}")
    return match.group(1)


def read_version(text: str, pin: Pin) -> str:
    """The version the pin holds; empty when the pin's key is missing and would be added."""
    return _unformat(pin, locate(text, pin).value)


def write_version(text: str, pin: Pin, version: str) -> str:
    return replace(text, locate(text, pin), pin.format.replace("{version}", version))


__all__ = ["Span", "locate", "read_version", "write_version"]
