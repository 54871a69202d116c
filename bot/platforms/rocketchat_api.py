"""Rocket.Chat's REST API as releasegate uses it, through rocketchat_API, for the bot and the
worker alike.

Rocket.Chat limits each endpoint to about ten calls a minute by default. A
call that is rate limited (HTTP 429 or `error-too-many-requests`) or that
cannot connect is retried with backoff a few times; what still fails raises
`PostFailed`, and the caller keeps the outcome to post later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import requests
from rocketchat_API.APIExceptions.RocketExceptions import (
    RocketApiException,
    RocketBadStatusCodeException,
)
from rocketchat_API.rocketchat import RocketChat

from bot.cards import Card
from config.errors import PostFailed

log = logging.getLogger(__name__)

RETRIES = 3
USERNAME_CACHE_SECONDS = 60.0
BACKOFF_SECONDS = 2.0


class RateLimited(PostFailed):
    """Rocket.Chat asked us to slow down."""


def channel_name(channel_ref: str) -> str:
    return channel_ref.split(":", 1)[1]


def is_rate_limited(exc: Exception) -> bool:
    if isinstance(exc, RocketBadStatusCodeException) and exc.status_code == 429:
        return True
    return isinstance(exc, RocketApiException) and (
        exc.status_code == 429 or "too-many-requests" in f"{exc.error_type} {exc.error}"
    )


class RocketChatPoster:
    def __init__(
        self, url: str, user_id: str, token: str, *, backoff: float = BACKOFF_SECONDS
    ) -> None:
        self.api = RocketChat(
            user_id=user_id, auth_token=token, server_url=url.rstrip("/"), timeout=10
        )
        self.backoff = backoff
        self._rooms: dict[str, str] = {}
        self._usernames: dict[str, tuple[float, str | None]] = {}
        self._bots: dict[str, tuple[float, bool]] = {}  # user id -> (when, is a bot or app)

    def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the API; wait out rate limits and dropped connections a bounded number of times."""
        for attempt in range(1, RETRIES + 1):
            try:
                response = method(*args, **kwargs)
            except (
                RocketApiException,
                RocketBadStatusCodeException,
                requests.RequestException,
            ) as exc:
                limited = is_rate_limited(exc)
                retryable = limited or isinstance(exc, requests.ConnectionError | requests.Timeout)
                if not retryable or attempt == RETRIES:
                    error = RateLimited if limited else PostFailed
                    raise error(f"Rocket.Chat {method.__name__} failed: {exc}") from exc
                log.info("Rocket.Chat %s: %s; retrying", method.__name__, exc)
                time.sleep(self.backoff * attempt)
                continue
            if isinstance(response, dict) and response.get("success") is False:
                raise PostFailed(f"Rocket.Chat {method.__name__} failed: {response.get('error')}")
            return response
        raise AssertionError("unreachable")

    def room_id(self, channel: str) -> str:
        name = channel_name(channel)
        if name not in self._rooms:
            info = self.call(self.api.channels_info, channel=name)
            self._rooms[name] = str(info["channel"]["_id"])
        return self._rooms[name]

    def post(self, channel: str, thread: str | None, text: str) -> str:
        extra = {"tmid": thread} if thread else {}
        response = self.call(
            self.api.chat_post_message, text, channel=f"#{channel_name(channel)}", **extra
        )
        message = response["message"]
        self._rooms[channel_name(channel)] = str(message["rid"])
        return str(message["_id"])

    def ephemeral(
        self, channel: str, user: str, text: str, thread: str | None = None, name: str = ""
    ) -> None:
        # Rocket.Chat's REST API has no ephemeral messages: answer in the asker's thread,
        # addressed to them by their current username.
        self.post(channel, thread, f"@{name or user} {text}")

    # Users: ids are who someone is; usernames change.

    def _user(self, **lookup: str) -> str | None:
        """The id of the user `users.info` finds by `lookup`; None when there is none (400).
        Whether they are a bot is remembered from the same answer."""
        try:
            found = self.call(self.api.users_info, **lookup)
        except PostFailed as exc:
            if getattr(exc.__cause__, "status_code", None) in (400, 404):
                return None  # "User not found"; a wrong token (401) or no answer still raises
            raise
        user = found.get("user") if isinstance(found, dict) else None
        if not isinstance(user, dict) or not user.get("_id"):
            return None
        roles = user.get("roles")
        roles = [str(r) for r in roles] if isinstance(roles, list) else []
        bot = str(user.get("type", "user")) != "user" or "bot" in roles or "app" in roles
        self._bots[str(user["_id"])] = (time.monotonic(), bot)
        return str(user["_id"])

    def is_bot(self, user_id: str) -> bool:
        """Whether the user is a bot or an app account (`users.info`'s type and roles): never
        an approver. Remembered for a minute; raises `PostFailed` when the server cannot say."""
        cached = self._bots.get(user_id)
        if cached and time.monotonic() - cached[0] < USERNAME_CACHE_SECONDS:
            return cached[1]
        if self._user(user_id=user_id) is None:
            return True  # nobody the server knows: certainly not a person who may approve
        return self._bots[user_id][1]

    def user_id(self, name_or_id: str) -> str | None:
        """The id of the user `name_or_id` names: tried as an id first, then as a username."""
        return self._user(user_id=name_or_id) or self._user(username=name_or_id)

    def id_of_username(self, username: str) -> str | None:
        """The id behind a username as the server knows it now (reactions carry usernames);
        remembered for a minute."""
        cached = self._usernames.get(username)
        if cached and time.monotonic() - cached[0] < USERNAME_CACHE_SECONDS:
            return cached[1]
        user_id = self._user(username=username)
        self._usernames[username] = (time.monotonic(), user_id)
        return user_id

    def post_card(self, channel: str, card: Card, thread: str | None = None) -> str:
        return self.post(channel, thread, card.text(mention="@{name}"))

    def update_card(self, channel: str, message_id: str, card: Card) -> None:
        self.call(
            self.api.chat_update, self.room_id(channel), message_id, card.text(mention="@{name}")
        )

    def history(
        self, channel: str, oldest: str | None, count: int = 100, latest: str | None = None
    ) -> list[dict[str, Any]]:
        """Messages of a channel, newest first: at most `count`, after `oldest` and before
        `latest` (ISO timestamps) where given."""
        extra = {k: v for k, v in (("oldest", oldest), ("latest", latest)) if v}
        room = self.room_id(channel)

        def channels_history() -> list[dict[str, Any]]:
            # rocketchat_API pages lazily; one page is all a polling round reads.
            pages = self.api.channels_history(room, count=count, max_count=count, **extra)
            return list(pages)

        return list(self.call(channels_history))

    def message(self, message_id: str) -> dict[str, Any]:
        return dict(self.call(self.api.chat_get_message, message_id)["message"])
