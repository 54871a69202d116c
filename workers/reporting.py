"""Tell the request's channel how it ended.

A poster per platform delivers one text to one channel (and thread), and
edits the request's card where the platform can. The outcome is stored on
the request before it is posted, so a post that fails is not lost: the
request stays listed as unreported and is posted again by
`retry_unreported` (when a worker starts and before each job).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from redis import Redis

from config.errors import PostFailed
from config.settings import Settings
from workers.cards import Card, card_for
from workers.request import DeployRequest, RequestState, Result
from workers.rocketchat_api import RocketChatPoster
from workers.slack_api import SlackPoster
from workers.store import PREFIX, RequestStore

log = logging.getLogger(__name__)

SHELL_OUTBOX = f"{PREFIX}:outbox:shell"
OUTBOX_MAXLEN = 10_000
GIVE_UP_AFTER = timedelta(days=1)


class Poster(Protocol):
    def post(self, channel: str, thread: str | None, text: str) -> str: ...
    def update_card(self, channel: str, ref: str, card: Card) -> None: ...


class ShellOutbox:
    """The shell chat reads its messages from a Redis stream; the worker appends to it.

    It has no cards to edit: every state change is its own line.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def post(self, channel: str, thread: str | None, text: str) -> str:
        entry = cast(Any, {"channel": channel, "thread": thread or "", "text": text})
        return str(self.redis.xadd(SHELL_OUTBOX, entry, maxlen=OUTBOX_MAXLEN, approximate=True))

    def update_card(self, channel: str, ref: str, card: Card) -> None:
        return None


def poster_for(channel: str, redis: Redis, settings: Settings) -> Poster:
    platform = channel.split(":", 1)[0]
    if platform == "shell":
        return ShellOutbox(redis)
    if platform == "slack" and settings.slack_bot_token:
        return SlackPoster(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
    if platform == "rocketchat" and settings.rocketchat_url and settings.rocketchat_token:
        return RocketChatPoster(settings.rocketchat_url, settings.rocketchat_user_id or "",
                                settings.rocketchat_token.get_secret_value())  # fmt: skip
    raise PostFailed(f"no credentials to post to {platform} channels (see the README)")


def outcome_text(request: DeployRequest, result: Result) -> str:
    changes = "; ".join(c.line() for c in request.changes)
    if result.state is RequestState.PUSHED and result.commit:
        return f"{request.id}: pushed {result.commit[:7]}: {changes}"
    if result.state is RequestState.NOOP:
        return f"{request.id}: nothing to do: {result.message}"
    return f"{request.id}: {result.state.value}: {result.message}"


def report(redis: Redis, settings: Settings, request: DeployRequest, text: str) -> bool:
    """Post `text` to the request's channel and thread; True when it was delivered."""
    store = RequestStore(redis)
    store.mark_unreported(request.id)
    card_ts = store.message_of(request.id)
    try:
        poster = poster_for(request.channel, redis, settings)
        poster.post(request.channel, card_ts or request.thread, text)
        if card_ts:
            poster.update_card(request.channel, card_ts, card_for(store, request.id))
    except Exception as exc:  # any platform failure: keep it listed and retry later
        log.warning("could not post the outcome to %s: %s", request.channel, exc)
        return False
    store.mark_reported(request.id)
    return True


def retry_unreported(redis: Redis, settings: Settings) -> int:
    """Post every stored outcome that could not be posted before; returns how many went out.

    After a day an outcome is no longer news: it stays on the request (`status
    R…` shows it, the audit stream has it) and is no longer retried.
    """
    store = RequestStore(redis)
    sent = 0
    for request_id in store.unreported():
        result = store.result(request_id)
        if result is None:
            continue
        if datetime.now(UTC) - result.finished_at > GIVE_UP_AFTER:
            log.warning("giving up posting the outcome of %s to chat", request_id)
            store.mark_reported(request_id)
            continue
        request = store.get(request_id)
        sent += report(redis, settings, request, outcome_text(request, result))
    return sent
