"""The bot's side of the outbox: post what workers queued, then acknowledge it.

One consumer per platform reads that platform's stream (`workers/outbox.py`)
in the consumer group shared by every bot replica, so each entry goes to one
bot. An entry is acknowledged only after its post went out (or it is found
already posted: the request no longer listed as unreported); a post the
platform refuses stays pending and is claimed again after `RETRY_IDLE`, by
this bot or, if this one died, by another. After `GIVE_UP_AFTER` an outcome
is no longer news: it stays on the request (`status R…`, the audit stream)
and is acknowledged without a post.

Where Redis has replicas, news is posted only once a replica holds it: a
master that dies with an outcome only it had takes that outcome along, the
worker lands the request again on the new master (its trailer keeps the
commit from happening twice) and writes the news again; posting the first
copy too would tell the thread twice. Until a replica confirms, the entries
stay pending with this consumer and are read again at its next round.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from typing import Any, cast

from redis import Redis
from redis.exceptions import ResponseError

from bot.telling import Links, Poster, PromotionOffer, RollbackOffer, Teller
from config.errors import UnknownRequest
from workers.state.durability import Durability
from workers.state.outbox import stream
from workers.state.store import RequestStore

log = logging.getLogger(__name__)

GROUP = "releasegate-bot"
RETRY_IDLE = timedelta(seconds=30)
BATCH = 50


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
        offer_rollback: RollbackOffer | None = None,
        links: Links | None = None,
        offer_promotion: PromotionOffer | None = None,
    ) -> None:
        self.redis = redis
        self.store = RequestStore(redis)
        self.teller = Teller(
            self.store,
            poster,
            links or Links(),
            offer_rollback=offer_rollback,
            offer_promotion=offer_promotion,
        )
        self.stream = stream(platform)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.retry_idle_ms = int(retry_idle.total_seconds() * 1000)
        self.durability = Durability(redis)
        self._holding = False  # entries were read but are not yet on a replica
        self._group_ready = False

    @property
    def holding(self) -> bool:
        """Entries were read but are held back until a replica confirms them."""
        return self._holding

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
        """Post what is due: entries held back last round, entries left pending long enough
        (a post chat refused, a bot that died), then new ones; returns how many were
        acknowledged."""
        self._ensure_group()
        entries: list[Any] = []
        if self._holding:  # read from the master now: one that took over may not have them
            held: Any = self.redis.xreadgroup(GROUP, self.name, {self.stream: "0"}, count=BATCH)
            entries += [entry for _stream, own in held or [] for entry in own]
        claimed: Any = self.redis.xautoclaim(
            self.stream, GROUP, self.name, self.retry_idle_ms, "0-0", count=BATCH
        )
        entries += list(claimed[1]) if claimed else []
        block = block_ms if not entries else None
        fresh = cast(
            list[Any],
            self.redis.xreadgroup(GROUP, self.name, {self.stream: ">"}, count=BATCH, block=block),
        )
        for _stream, new in fresh or []:
            entries.extend(new)
        # A held entry idle long enough is claimed again too: each is handled once.
        entries = list({entry_id: (entry_id, fields) for entry_id, fields in entries}.values())
        entries = [(entry_id, fields) for entry_id, fields in entries if fields]
        self._holding = bool(entries) and not self.durability.confirmed()
        if self._holding:
            return 0  # pending with us, read again next round
        return sum(self._handle(entry_id, fields) for entry_id, fields in entries)

    def _handle(self, entry_id: Any, raw: dict[Any, Any]) -> bool:
        """Post one entry's news, then acknowledge it; a post chat refused stays pending (it
        is claimed again after `RETRY_IDLE`). True when the entry was acknowledged."""
        fields = _decoded(raw)
        request_id, kind = fields.get("request", ""), fields.get("kind", "outcome")
        try:
            self.teller.tell(fields)
        except UnknownRequest:
            pass  # the request is gone (past its retention): nothing left to tell
        except Exception:  # any platform failure: leave it pending, retry later
            log.warning("could not post the %s of %s", kind, request_id, exc_info=True)
            return False
        self.redis.xack(self.stream, GROUP, entry_id)
        return True

    def one_round(self) -> float:
        """One round for a `Supervisor`: blocks up to a second for news."""
        self.run_once(block_ms=1000)
        return 0.0
