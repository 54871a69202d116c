"""What a chat platform event becomes, and what the conversation answers.

Platform adapters translate to and from these types only; nothing in them is
specific to Slack, Rocket.Chat or the shell.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from config.principals import Kind, Principal


@dataclass(frozen=True)
class ChatEvent:
    """Someone wrote `text` in `channel` (on `platform`), possibly inside a thread."""

    platform: str
    user: str  # the platform's stable user id; never a display name
    channel: str
    text: str
    user_name: str = ""
    thread: str | None = None
    groups: frozenset[str] = frozenset()  # platform groups the user is in, as principals
    # The platform says the sender is a bot or an app (it never approves nor breaks glass):
    # known, or asked of the platform when a decision needs it, never for every command.
    bot: bool | Callable[[], bool] = False

    def is_bot(self) -> bool:
        return self.bot() if callable(self.bot) else self.bot

    @property
    def principal(self) -> str:
        return f"{self.platform}:{self.user}"

    @property
    def who(self) -> Principal:
        """The asker as a principal: the platform and its stable user id."""
        return Principal(cast(Kind, self.platform), self.user)

    @property
    def channel_ref(self) -> str:
        return f"{self.platform}:{self.channel}"

    @property
    def display(self) -> str:
        return self.user_name or self.user


# A write Redis did not confirm on a replica in time: the person is warned, and nothing (no
# card) may say more than that warning does.
NOT_CONFIRMED = "not_confirmed"


@dataclass(frozen=True)
class Reply:
    """An answer to one event.

    `private` asks for an ephemeral answer where the platform has one.
    `request_id` marks the message that presents a new request: platforms
    post it visibly (its card), and reactions on it approve. `about` names
    the request an answer concerns, so platforms can answer in its thread
    and refresh its card. `queued` lists requests this event queued.
    """

    text: str
    ok: bool = True
    private: bool = False
    reason: str | None = None  # why a refusal refused (Refused.reason), for adapters to weigh
    request_id: str | None = None
    about: str | None = None
    queued: tuple[str, ...] = field(default=())
