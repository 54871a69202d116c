"""Evidence before a deploy, and times nothing deploys: an environment's `gates:` and
`freezes:`.

```yaml
environments:
  prd:
    gates:
      alerts:
        alertmanager: http://alertmanager.monitoring:9093
        matchers: ['severity="critical"', 'env="{env}"']   # {env} and {app} are filled in
        required: true      # an Alertmanager that cannot be asked blocks (false: it does not)
      signature: {cosign_key: /etc/releasegate/cosign.pub}   # images must be signed with it
    freezes:
      - {from: "2026-12-23 18:00", to: "2026-12-27 08:00", tz: Europe/Zurich, reason: holidays}
```
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Alertmanager's matcher syntax: a label name, an operator, a quoted value.
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlertsGate(_Model):
    alertmanager: str = Field(pattern=r"^https?://[^\s]+$", max_length=500)
    matchers: list[str] = Field(min_length=1, max_length=20)
    required: bool = True

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, values: list[str]) -> list[str]:
        for value in values:
            if not MATCHER.fullmatch(value.strip()):
                raise ValueError(f'{value!r} is not a matcher like severity="critical"')
        return values

    def filled(self, env: str, app: str = "") -> list[str]:
        """The matchers with `{env}` and `{app}` filled in."""
        return [m.strip().replace("{env}", env).replace("{app}", app) for m in self.matchers]

    @property
    def per_app(self) -> bool:
        return any("{app}" in m for m in self.matchers)


class SignatureGate(_Model):
    """A cosign signature (made with `cosign sign --key`) of the approved digest, verified
    with this public key (PEM: ECDSA P-256, RSA or Ed25519). Keyless (Fulcio, Rekor) is not
    supported."""

    cosign_key: Path


class Gates(_Model):
    alerts: AlertsGate | None = None
    signature: SignatureGate | None = None
    # CI on the artifact's source commit: `all` (every check run and status succeeded, at
    # least one exists) or the names that must have succeeded.
    checks: Literal["all"] | list[str] | None = None


class Forge(_Model):
    """A forge the source repositories live on (github.com and gitlab.com are known)."""

    host: str = Field(pattern=r"^[A-Za-z0-9.-]+(:\d{1,5})?$")
    kind: Literal["github", "gitlab"]
    api_url: str = Field(pattern=r"^https?://[^\s]+$")
    token_env: str = Field(default="RELEASEGATE_FORGE_TOKEN", pattern=r"^[A-Z_][A-Z0-9_]{0,99}$")


KNOWN_FORGES = (
    Forge(host="github.com", kind="github", api_url="https://api.github.com"),
    Forge(host="gitlab.com", kind="gitlab", api_url="https://gitlab.com/api/v4"),
)


FREEZE_TIME = "%Y-%m-%d %H:%M"


class Freeze(_Model):
    """A one-off range when nothing deploys to the environment (beside its weekly windows)."""

    starts: str = Field(alias="from")
    ends: str = Field(alias="to")
    tz: str = "UTC"
    reason: str = Field(default="", max_length=200)

    @model_validator(mode="after")
    def _range(self) -> Freeze:
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.tz!r}") from None
        for value in (self.starts, self.ends):
            try:
                datetime.strptime(value, FREEZE_TIME)
            except ValueError:
                raise ValueError(f"{value!r} is not YYYY-MM-DD HH:MM") from None
        if self.end <= self.start:
            raise ValueError(f"the freeze ends ({self.ends}) before it starts ({self.starts})")
        return self

    @property
    def start(self) -> datetime:
        return datetime.strptime(self.starts, FREEZE_TIME).replace(tzinfo=ZoneInfo(self.tz))

    @property
    def end(self) -> datetime:
        return datetime.strptime(self.ends, FREEZE_TIME).replace(tzinfo=ZoneInfo(self.tz))

    def covers(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def describe(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.starts} to {self.ends} {self.tz}{why}"
