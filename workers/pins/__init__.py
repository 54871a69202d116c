"""Read and write the version a pin holds, changing only the version's bytes.

One locator per pin kind returns the `Span` where the version is written;
reading and writing both go through it, so `status`, `check-config`, the
request's diff and the worker's commit always agree on what a pin holds.
A pin's `format` (`v{version}`) is applied here, once, for every kind.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
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


_CACHE_SIZE = 8192
_found: OrderedDict[tuple[bytes, Pin], Span] = OrderedDict()
_found_lock = threading.Lock()


# A pinned file is read on the request path and parsed whole: a larger one is refused, not
# parsed (a 4 MiB YAML file would hold a chat answer for seconds).
MAX_PINNED_FILE = 1024 * 1024


def locate(text: str, pin: Pin) -> Span:
    """Where the pin's version is written in `text`; remembered by the text's digest, since
    chat answers read the same unchanged files again and again."""
    data = text.encode()
    if len(data) > MAX_PINNED_FILE:
        raise PinError(
            f"{pin.file} is {len(data) // 1024} KiB; releasegate edits pinned files of at most "
            f"{MAX_PINNED_FILE // 1024} KiB (move the version into a smaller file)"
        )
    key = (hashlib.blake2b(data, digest_size=16).digest(), pin)
    with _found_lock:
        if (span := _found.get(key)) is not None:
            _found.move_to_end(key)
            return span
    span = _locate(text, pin)
    with _found_lock:
        _found[key] = span
        while len(_found) > _CACHE_SIZE:
            _found.popitem(last=False)
    return span


def _locate(text: str, pin: Pin) -> Span:
    if pin.kind == "yaml_path":
        return yamlpath.yaml_path(text, pin.file, pin.target, document=pin.document)
    return LOCATORS[pin.kind](text, pin.file, pin.target, pin.part)


DIGEST = r"[A-Za-z][A-Za-z0-9]*:[0-9a-fA-F]{32,}"


def _unformat(pin: Pin, written: str) -> str:
    if pin.format == "{version}" or not written:
        return written
    pattern = "".join(
        "(?P<version>.*?)"
        if part == "{version}"
        else DIGEST
        if part == "{digest}"
        else re.escape(part)
        for part in re.split(r"(\{version\}|\{digest\})", pin.format)
    )
    match = re.fullmatch(pattern, written)
    if match is None:
        raise PinError(f"{pin.describe()} holds {written!r}, which is not of the form {pin.format}")
    return match.group("version")


def read_digest(text: str, pin: Pin) -> str:
    """The artifact digest the pin holds beside its version: an image entry's `digest`, or
    the `{digest}` of its format; empty where it holds none."""
    if "{digest}" in pin.format:
        written = locate(text, pin).value
        found = re.search(DIGEST, written)
        return found.group(0) if found else ""
    if pin.kind == "kustomize_image" and pin.part_name == "tag":
        beside = pin.model_copy(update={"part": "digest", "format": "{version}"})
        try:
            return locate(text, beside).value
        except PinError:
            return ""
    return ""


def read_version(text: str, pin: Pin) -> str:
    """The version the pin holds; empty when the pin's key is missing and would be added."""
    return _unformat(pin, locate(text, pin).value)


# What each kind of pin can hold, by (kind, part); every pin refuses control characters.
_HOLDS: dict[tuple[str, str | None], tuple[re.Pattern[str], str]] = {
    # Docker's reference grammar: a tag is at most 128 of these, and never starts with . or -.
    ("kustomize_image", "tag"): (
        re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"),
        "an image tag (letters, digits, _ . -; at most 128)",
    ),
    ("kustomize_image", "digest"): (
        re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"),
        "an image digest (sha256:HEX)",
    ),
    # A Git ref that also survives in a URL's query: no spaces, .., ~^:?*[\ & # or leading -.
    ("terraform_module", "ref"): (
        re.compile(
            r"(?!-)(?!.*\.\.)(?!.*[./]$)(?!.*\.lock$)"
            r"[A-Za-z0-9._/+=@-]{1,200}"
        ),
        "a Git ref in a module source (?ref=)",
    ),
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_fits(pin: Pin, written: str) -> None:
    """Refuse a value this kind of pin cannot hold, before anything is written."""
    if _CONTROL.search(written):
        raise PinError(f"{pin.describe()} cannot hold {written!r}: it has control characters")
    rule = _HOLDS.get((pin.kind, pin.part_name))
    if rule is not None and not rule[0].fullmatch(written):
        raise PinError(f"{pin.describe()} cannot hold {written!r}: it must be {rule[1]}")


def write_version(text: str, pin: Pin, version: str, digest: str = "") -> str:
    """`text` with the pin holding `version` (and `digest`, where its format names one)."""
    if "{digest}" in pin.format and not digest:
        raise PinError(
            f"{pin.describe()} writes {{digest}}, and its app's artifact gave none "
            "(artifact.pin_digest)"
        )
    written = pin.format.replace("{version}", version).replace("{digest}", digest)
    check_fits(pin, written)
    return replace(text, locate(text, pin), written)


__all__ = ["Span", "locate", "read_version", "write_version"]
