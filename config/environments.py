"""An environment and an app of the policy: who may deploy, approve and lock where, the gates
that hold, and where and how each app's versions are pinned and checked."""

from __future__ import annotations

import re
import shlex
from datetime import timedelta
from functools import cached_property
from typing import Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

from config.artifact import Artifact
from config.durations import Duration
from config.errors import VersionError
from config.gates import Freeze, Gates
from config.pin import Pin
from config.principals import ChannelRef, Principal
from config.rollout import Rollout
from config.text import inert
from config.verify import Verify
from config.windows import Window

SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
# Whatever an app's own pattern says, a version is also held to this: it ends up
# in files, commit messages and chat, and must never look like an option or markup.
# A digest (`sha256:…`) is a version too: `:` is allowed here, and each pin kind still
# refuses what it cannot hold (an image tag has no `:`, a module ref neither).
SAFE_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+:-]{0,127}")
SAFE_VERSION_RULE = "letters, digits and . _ + - :, starting with a letter or digit, at most 128"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppEnv(Protocol):
    """What names an app in an environment (a request's change)."""

    @property
    def app(self) -> str: ...

    @property
    def env(self) -> str: ...


class Environment(_Model):
    channels: list[str] = Field(min_length=1)
    deployers: list[str] = Field(min_length=1)
    approvers: list[str] = []
    # Who may lock and unlock the environment; empty means its approvers, else its deployers.
    lockers: list[str] = []
    approvals: int = Field(default=0, ge=0, le=10)
    aliases: list[str] = []
    approval_ttl: Duration = timedelta(hours=2)
    # Per person: how many of their requests may wait or be queued here at once, and how many
    # they may file a minute (one person cannot flood the channel, the forge or the queue).
    max_open_requests: int = Field(default=5, ge=1, le=1000)
    requests_per_minute: int = Field(default=10, ge=1, le=1000)
    promote_from: str | None = None
    prereleases: bool = True
    windows: list[str] = []  # "Mon-Thu 08:00-17:00 Europe/Zurich"; none means always open
    # Run in the changed working tree before committing, e.g. "kubectl kustomize env/prd".
    # Split like a shell would, but never run by one.
    validate_command: str | None = Field(default=None, alias="validate")
    # Environment variables the validation command may see besides PATH, HOME and LANG.
    validate_env: list[str] = []
    # Let the validation command reach the network (remote Kustomize bases, Helm charts); off
    # by default, since it could reach Redis or the forge from inside the sandbox.
    validate_network: bool = False
    # Follow the reconciler after a push and say in the thread when the commit runs healthy.
    rollout: Rollout | None = None
    # Evidence asked for before a deploy (firing alerts), when a request is filed and again
    # right before its commit; and one-off ranges when nothing deploys here.
    gates: Gates = Gates()
    freezes: list[Freeze] = []
    # Who may deploy past approvals, windows, freezes, locks, alerts and checks during an
    # incident (`deploy! … reason …`); its approvers are asked to review it within this.
    break_glass: list[str] = []
    break_glass_review: Duration = timedelta(hours=24)
    # After the rollout (or the push): measurements that decide whether the deploy stays.
    verify: Verify | None = None
    # Where the environment is seen (`https://{app}.prd.acme.example`): the deployment
    # records on the source repository link it.
    url: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=500)
    # How long the upstream must have run a version, verified, before it comes here; and
    # whether releasegate then files the promotion itself (approvals are still asked).
    soak: Duration | None = None
    auto_promote: bool = False

    @field_validator("validate_command")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                if not shlex.split(value):
                    raise ValueError("an empty command")
            except ValueError as exc:
                raise ValueError(f"not a command line: {exc}") from exc
        return value

    @field_validator("channels")
    @classmethod
    def _channels(cls, values: list[str]) -> list[str]:
        for value in values:
            ChannelRef.parse(value)
        return values

    @field_validator("windows")
    @classmethod
    def _windows(cls, values: list[str]) -> list[str]:
        for value in values:
            Window.parse(value)
        return values

    @cached_property
    def parsed_windows(self) -> list[Window]:
        return [Window.parse(w) for w in self.windows]

    @property
    def may_lock(self) -> list[str]:
        return self.lockers or self.approvers or self.deployers

    @field_validator("deployers", "approvers", "lockers", "break_glass")
    @classmethod
    def _principals(cls, values: list[str]) -> list[str]:
        for value in values:
            Principal.parse(value)
        return values


class App(_Model):
    # Where the app's pins live (the reconciler watches it); default: the only repository.
    repository: str | None = None
    versions: str = "semver"
    # Where its versions live (an image, Git tags, a Helm chart): checked before a request.
    artifact: Artifact | None = None
    # The app's source repository (https://github.com/acme/awesome), where its artifact does
    # not name it (org.opencontainers.image.source, git_tags): its deployments and lead
    # times are recorded there.
    source: str | None = Field(default=None, pattern=r"^\S+$", max_length=500)
    pins: dict[str, list[Pin]] = Field(min_length=1)

    @field_validator("versions")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if value != "semver":
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    @cached_property
    def version_pattern(self) -> re.Pattern[str]:
        return SEMVER if self.versions == "semver" else re.compile(self.versions)

    def check_version(self, name: str, version: str) -> str:
        """Return `version` if this app accepts it, else raise `VersionError`."""
        shown = inert(version, limit=40)
        if not SAFE_VERSION.fullmatch(version):
            raise VersionError(f"{shown} is not a valid version of {name} ({SAFE_VERSION_RULE})")
        if not self.version_pattern.fullmatch(version):
            expected = "semantic version like 2.1.0" if self.versions == "semver" else self.versions
            raise VersionError(f"{shown} is not a valid version of {name} (expected {expected})")
        return version
