"""The bot's side of the outbox: post what workers queued, then acknowledge it.

One consumer per platform reads that platform's stream (`workers/outbox.py`)
in the consumer group shared by every bot replica, so each entry goes to one
bot. An entry is acknowledged only after its post went out (or it is found
already posted: the request no longer listed as unreported); a post the
platform refuses stays pending and is claimed again after `RETRY_IDLE`, by
this bot or, if this one died, by another. After `GIVE_UP_AFTER` an outcome
is no longer news: it stays on the request (`status R…`, the audit stream)
and is acknowledged without a post.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from redis import Redis
from redis.exceptions import ResponseError

from bot import messages
from bot.cards import Card, card_for
from workers.outbox import stream
from workers.store import RequestStore

log = logging.getLogger(__name__)

GROUP = "releasegate-bot"
RETRY_IDLE = timedelta(seconds=30)
GIVE_UP_AFTER = timedelta(days=1)
BATCH = 50


class Poster(Protocol):
    def post(self, channel: str, thread: str | None, text: str) -> str: ...
    def update_card(self, channel: str, ref: str, card: Card) -> None: ...


def post_outcome(store: RequestStore, poster: Poster, request_id: str) -> None:
    """Say how the request ended in its thread and refresh its card; raises if chat refuses."""
    request = store.get(request_id)
    result = store.result(request_id)
    if result is None:
        return
    card_ref = store.message_of(request_id)
    poster.post(request.channel, card_ref or request.thread, messages.outcome(request, result))
    if card_ref:
        poster.update_card(request.channel, card_ref, card_for(store, request_id))


def _decoded(fields: dict[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in fields.items()
    }


class OutboxConsumer:
    def __init__(
        self,
        redis: Redis,
        platform: str,
        poster: Poster,
        *,
        name: str | None = None,
        retry_idle: timedelta = RETRY_IDLE,
    ) -> None:
        self.redis = redis
        self.store = RequestStore(redis)
        self.poster = poster
        self.stream = stream(platform)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.retry_idle_ms = int(retry_idle.total_seconds() * 1000)
        self._group_ready = False

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def run_once(self, block_ms: int | None = None) -> int:
        """Post what is due: entries left pending long enough, then new ones; returns how many
        were acknowledged."""
        self._ensure_group()
        claimed: Any = self.redis.xautoclaim(
            self.stream, GROUP, self.name, self.retry_idle_ms, "0-0", count=BATCH
        )
        entries = list(claimed[1]) if claimed else []
        block = block_ms if not entries else None
        fresh = cast(
            list[Any],
            self.redis.xreadgroup(GROUP, self.name, {self.stream: ">"}, count=BATCH, block=block),
        )
        for _stream, new in fresh or []:
            entries.extend(new)
        return sum(self._handle(entry_id, fields) for entry_id, fields in entries if fields)

    def _handle(self, entry_id: Any, raw: dict[Any, Any]) -> bool:
        fields = _decoded(raw)
        request_id = fields.get("request", "")
        if request_id and self.store.is_unreported(request_id):
            result = self.store.result(request_id)
            if result is not None and datetime.now(UTC) - result.finished_at > GIVE_UP_AFTER:
                log.warning("giving up posting the outcome of %s to chat", request_id)
            else:
                try:
                    post_outcome(self.store, self.poster, request_id)
                except Exception as exc:  # any platform failure: leave it pending, retry later
                    log.warning("could not post the outcome of %s: %s", request_id, exc)
                    return False
            self.store.mark_reported(request_id)
        self.redis.xack(self.stream, GROUP, entry_id)
        return True

    def step(self) -> float:
        """One round for a `Supervisor`: blocks up to a second for news."""
        self.run_once(block_ms=1000)
        return 0.0
