"""The outbox: how a worker tells the chat that a request ended, without talking to chat.

Workers append an entry per ended request to the stream of the request's
platform (`releasegate:outbox:slack`, `…:rocketchat`, `…:shell`). The bot
reads each stream with a consumer group, posts, and acknowledges only after
the post; what a dead bot left unacknowledged is claimed by another. The
request stays listed as unreported until a post went out, so `status R…`
can say an outcome is still on its way. An entry names its request, which
names its channel; only a promotion a soak made due (no request yet) names
the channel it is for.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, cast

from redis import Redis

from config.principals import ChannelRef
from workers.state import keys
from workers.state.request import DeployRequest
from workers.state.store import RequestStore


class Kind(StrEnum):
    """What an outbox entry tells (its `kind` field); `bot/telling.py` words each."""

    OUTCOME = "outcome"  # how a request ended
    ROLLOUT = "rollout"  # how its rollout went
    NOTE = "note"  # a line for its thread (a merge request opened, a merge refused for now)
    VERIFICATION = "verification"  # a verification's start, progress or end (`phase`)
    PROMOTE = "promote"  # a soak ended: the promotion to file (`env`, `app`, `version`)


def stream(platform: str) -> str:
    return keys.outbox(platform)


def platform_of(channel: str) -> str:
    return ChannelRef.parse(channel).platform


def report_to(request: DeployRequest) -> str:
    """The stream that tells `request`'s channel (pass it to `RequestStore.finish`, which
    writes the entry in the same step as the final state)."""
    return stream(platform_of(request.channel))


def publish(redis: Redis, request: DeployRequest, kind: Kind = Kind.OUTCOME) -> str:
    """Queue `kind` news about `request` for its channel; returns the stream entry id."""
    RequestStore(redis).mark_unreported(request.id)
    entry = cast(Any, {"request": request.id, "kind": kind})
    key = stream(platform_of(request.channel))
    return str(redis.xadd(key, entry, maxlen=keys.OUTBOX_MAXLEN, approximate=True))


def note(redis: Redis, request: DeployRequest, about: str, **facts: str) -> str:
    """Queue news for `request`'s thread that is not its end, as data: what it is `about`
    (`pr_opened`, `pr_not_opened`, `merge_refused`, `checks`) and its facts. Workers say no
    sentences; the bot words the note (`bot.messages.note`)."""
    fields = {k: v[:2000] for k, v in facts.items()}
    entry = cast(
        Any,
        {
            "request": request.id,
            "kind": Kind.NOTE.value,
            "about": about,
            **fields,
        },
    )
    return str(redis.xadd(report_to(request), entry, maxlen=keys.OUTBOX_MAXLEN, approximate=True))
