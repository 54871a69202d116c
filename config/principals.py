"""Who and where, as values parsed once: principals (`slack:U0LEAD1`) and channels.

A principal names a user by a platform's stable id (`slack:U…`, `rocketchat:ID`
or a Rocket.Chat username the bot resolves to an id, `shell:NAME`), a
platform group (`slack-group:S…`), a policy group (`group:NAME`) or a person
(`person:NAME`, every id that person uses). Never a display name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

Kind = Literal["slack", "slack-group", "rocketchat", "shell", "group", "person", "releasegate"]
# `releasegate:…` is releasegate itself (a rollback after a failed verification): written by
# us, read back by `of`, never accepted from a policy by `parse`.
KINDS: tuple[Kind, ...] = (
    "slack",
    "slack-group",
    "rocketchat",
    "shell",
    "group",
    "person",
    "releasegate",
)
USER_KINDS: tuple[Kind, ...] = ("slack", "rocketchat", "shell")

_PRINCIPAL = re.compile(
    r"(slack|slack-group|rocketchat|shell|group|person):([A-Za-z0-9._@-]{1,80})"
)
_CHANNEL = re.compile(r"(slack|rocketchat|shell):([A-Za-z0-9._#-]{1,80})")


@dataclass(frozen=True, order=True)
class Principal:
    kind: Kind
    id: str

    @classmethod
    def parse(cls, text: str) -> Principal:
        match = _PRINCIPAL.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not a principal ({', '.join(KINDS[:-1])}:ID)")
        return cls(cast(Kind, match.group(1)), match.group(2))

    @classmethod
    def of(cls, text: str) -> Principal:
        """A principal we wrote ourselves (a request's requester, a stored approval): split,
        not validated, since platform ids are whatever the platform says they are."""
        kind, _, ident = text.partition(":")
        if kind not in KINDS:
            raise ValueError(f"{text!r} is not a principal")
        return cls(kind, ident)

    @property
    def is_user(self) -> bool:
        return self.kind in USER_KINDS

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True, order=True)
class ChannelRef:
    platform: str
    id: str

    @classmethod
    def parse(cls, text: str) -> ChannelRef:
        match = _CHANNEL.fullmatch(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not PLATFORM:CHANNEL (slack:C0123, rocketchat:deploy-prd)"
            )
        return cls(match.group(1), match.group(2))

    def __str__(self) -> str:
        return f"{self.platform}:{self.id}"
