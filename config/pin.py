"""A pin: one place in one file of a repository where an app's version is written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

PinKind = Literal["kustomize_image", "configmap_literal", "yaml_path", "terraform_module", "regex"]
PIN_KINDS: tuple[PinKind, ...] = (
    "kustomize_image",
    "configmap_literal",
    "yaml_path",
    "terraform_module",
    "regex",
)
# Which part of the pinned thing holds the version, per kind; the first is the default.
PIN_PARTS: dict[str, tuple[str, ...]] = {
    "kustomize_image": ("tag", "digest"),
    "terraform_module": ("ref", "version"),
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Pin(_Model):
    """One place in one file where an app's version is written."""

    file: str
    # The repository holding `file`: the app's, unless the pin names another. Filled in when
    # the policy is read, so every pin knows its repository.
    repository: str = ""
    kustomize_image: str | None = None
    configmap_literal: str | None = None
    yaml_path: str | None = None
    terraform_module: str | None = None
    regex: str | None = None
    part: str | None = None  # kustomize_image: tag|digest; terraform_module: ref|version
    document: str | None = None  # yaml_path in a multi-document file: "Kind" or "Kind/name"
    format: str = "{version}"  # how the version is written, e.g. "v{version}"

    @field_validator("file")
    @classmethod
    def _relative(cls, value: str) -> str:
        parts = Path(value).parts
        if not parts or Path(value).is_absolute() or ".." in parts or value.startswith("-"):
            raise ValueError(f"{value!r} must be a path inside the repository")
        return value

    @field_validator("configmap_literal")
    @classmethod
    def _generator_key(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[^/\s]+/[^=/\s]+", value):
            raise ValueError(f"{value!r} is not GENERATOR/KEY (awesome-config/appVersion)")
        return value

    @field_validator("regex")
    @classmethod
    def _version_group(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                pattern = re.compile(value, re.MULTILINE)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from exc
            if "version" not in pattern.groupindex:
                raise ValueError("needs a named group (?P<version>...)")
        return value

    @field_validator("format")
    @classmethod
    def _one_placeholder(cls, value: str) -> str:
        rest = value.replace("{version}", "").replace("{digest}", "", 1)
        if value.count("{version}") != 1 or "{" in rest or "}" in rest:
            raise ValueError(
                f"{value!r} must contain {{version}} exactly once, {{digest}} at most once, "
                "and no other braces"
            )
        return value

    @property
    def kind(self) -> PinKind:
        kinds = [k for k in PIN_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a pin needs exactly one of {', '.join(PIN_KINDS)}")
        return kinds[0]

    @property
    def target(self) -> str:
        return str(getattr(self, self.kind))

    @property
    def part_name(self) -> str | None:
        parts = PIN_PARTS.get(self.kind)
        return (self.part or parts[0]) if parts else None

    def problems(self) -> list[str]:
        """What is wrong with this pin beyond each field's own check."""
        try:
            kind = self.kind
        except ValueError as exc:
            return [str(exc)]
        parts = PIN_PARTS.get(kind, ())
        if self.part is not None and self.part not in parts:
            allowed = ", ".join(parts) if parts else f"nothing for {kind}"
            return [f"part {self.part!r} is not one of: {allowed}"]
        if self.document is not None and kind != "yaml_path":
            return ["document only applies to yaml_path pins"]
        return []

    def describe(self) -> str:
        part = f", {self.part_name}" if self.part else ""
        return f"{self.file} ({self.kind}: {self.target}{part})"
