"""Tell the request's channel how it ended.

A poster per platform delivers one text to one channel (and thread). The
outcome is stored on the request before it is posted, so a post that fails
is not lost: the request stays listed as unreported and is posted again by
`retry_unreported`.
"""

from __future__ import annotations

import logging
from typing import Protocol

from redis import Redis

from config.errors import ReleasegateError
from config.settings import Settings
from workers.request import DeployRequest, RequestState, Result
from workers.store import PREFIX, RequestStore

log = logging.getLogger(__name__)

SHELL_OUTBOX = f"{PREFIX}:outbox:shell"
OUTBOX_MAXLEN = 10_000


class PostFailed(ReleasegateError):
    """A chat platform did not take our message."""


class Poster(Protocol):
    def post(self, channel: str, thread: str | None, text: str) -> None: ...


class ShellOutbox:
    """The shell chat reads its messages from a Redis stream; the worker appends to it."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def post(self, channel: str, thread: str | None, text: str) -> None:
        self.redis.xadd(
            SHELL_OUTBOX,
            {"channel": channel, "thread": thread or "", "text": text},
            maxlen=OUTBOX_MAXLEN,
            approximate=True,
        )


def poster_for(channel: str, redis: Redis, settings: Settings) -> Poster:
    platform = channel.split(":", 1)[0]
    if platform == "shell":
        return ShellOutbox(redis)
    raise PostFailed(f"releasegate cannot post to {platform} channels yet")


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
    try:
        poster_for(request.channel, redis, settings).post(request.channel, request.thread, text)
    except Exception as exc:  # any platform failure: keep it listed and retry later
        log.warning("could not post the outcome to %s: %s", request.channel, exc)
        return False
    store.mark_reported(request.id)
    return True


def retry_unreported(redis: Redis, settings: Settings) -> int:
    """Post every stored outcome that could not be posted before; returns how many went out."""
    store = RequestStore(redis)
    sent = 0
    for request_id in store.unreported():
        result = store.result(request_id)
        if result is None:
            continue
        request = store.get(request_id)
        sent += report(redis, settings, request, outcome_text(request, result))
    return sent
