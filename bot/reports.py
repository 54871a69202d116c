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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from redis import Redis
from redis.exceptions import ResponseError

from bot import messages, verification
from bot.cards import Card, card_for
from bot.events import Reply
from config.errors import UnknownRequest
from workers.rollout.follow import load as load_rollout
from workers.rollout.verify import load as load_verification
from workers.state import keys
from workers.state.durability import Durability
from workers.state.outbox import stream
from workers.state.request import DeployRequest, Result
from workers.state.store import RequestStore

log = logging.getLogger(__name__)

GROUP = "releasegate-bot"
RETRY_IDLE = timedelta(seconds=30)
GIVE_UP_AFTER = timedelta(days=1)
TOLD_KEPT = 30 * 24 * 3600  # seconds a rollout's "told" marker is kept
BATCH = 50


class Poster(Protocol):
    def post(self, channel: str, thread: str | None, text: str) -> str: ...
    def update_card(self, channel: str, ref: str, card: Card) -> None: ...


@dataclass(frozen=True)
class Links:
    """Where people click: a commit's page on the forge, an application in Argo CD."""

    commit: Callable[[str, str], str | None] = lambda repository, sha: None
    application: Callable[[str], str | None] = lambda name: None


def post_outcome(
    store: RequestStore, poster: Poster, request_id: str, links: Links | None = None
) -> None:
    """Say how the request ended in its thread and refresh its card; raises if chat refuses."""
    request = store.get(request_id)
    result = store.result(request_id)
    if result is None:
        return
    card_ref = store.message_of(request_id)
    landed = result.commits or ({"": result.commit} if result.commit else {})
    urls = [url for name, sha in landed.items() if (url := (links or Links()).commit(name, sha))]
    text = outcome_text(store, request, result, urls)
    poster.post(request.channel, card_ref or request.thread, text)
    if card_ref:
        poster.update_card(request.channel, card_ref, card_for(store, request_id))


def outcome_text(
    store: RequestStore, request: DeployRequest, result: Result, urls: list[str] | None = None
) -> str:
    """How the request ended, and where its verification began at the push (no rollout to
    follow first), what it measures."""
    text = messages.outcome(request, result, urls or [])
    checked = load_verification(store.redis, request.id)
    if checked is not None and load_rollout(store.redis, request.id) is None:
        text += "\n" + verification.started_text(request, checked)
    return text


# Files a rollback request for an app whose rollout degraded, through the same path as a
# person typing it; returns the conversation's answer (a new request, or why not).
RollbackOffer = Callable[[DeployRequest, str], Reply]
# Files `promote APP to ENV` once a soak ended, through the same path as a person typing
# it; returns the conversation's answer (a new request, or why not).
PromotionOffer = Callable[[str, str, str], Reply]


def post_rollout(
    store: RequestStore,
    poster: Poster,
    request_id: str,
    offer_rollback: RollbackOffer | None,
    links: Links | None = None,
) -> None:
    """Say how the rollout went in the request's thread, refresh its card, and where an app
    degraded, put a rollback request (a card people approve like any other) in the thread.

    Each step is marked done in Redis as soon as it happened, so a retry after chat refused
    a later post repeats only what did not happen: the news is told once, a rollback filed
    once, its card posted once."""
    record = load_rollout(store.redis, request_id)
    if record is None:
        return
    redis = store.redis
    request = store.get(request_id)
    card_ref = store.message_of(request_id)
    thread = card_ref or request.thread

    def step(name: str) -> str:
        return keys.rollout_step(request_id, name)

    if not redis.exists(step("told")):
        # One application followed: link it (a train's summary names each instead).
        names = {t.name for t in record.targets}
        url = (links or Links()).application(names.pop()) if len(names) == 1 else None
        poster.post(request.channel, thread, messages.rollout_news(request, record, url))
        redis.set(step("told"), 1, ex=TOLD_KEPT)
        if card_ref:
            poster.update_card(request.channel, card_ref, card_for(store, request_id))
    if offer_rollback is None:
        return
    for target in record.targets:
        if target.state != "degraded" or redis.exists(step(f"posted:{target.app}")):
            continue
        filed = cast(bytes | None, redis.get(step(f"filed:{target.app}")))
        if filed is None:
            reply = offer_rollback(request, target.app)
            if reply.request_id is None:
                text = messages.rollback_not_offered(target.app, request.env, reply.text)
                poster.post(request.channel, thread, text)
                redis.set(step(f"posted:{target.app}"), 1, ex=TOLD_KEPT)
                continue
            redis.set(step(f"filed:{target.app}"), reply.request_id, ex=TOLD_KEPT)
            rollback_id = reply.request_id
        else:
            rollback_id = filed.decode()
        card = card_for(store, rollback_id)
        ts = poster.post(request.channel, thread, card.text())
        store.bind_message(rollback_id, request.channel, ts)
        redis.set(step(f"posted:{target.app}"), 1, ex=TOLD_KEPT)
        poster.update_card(request.channel, ts, card)


def post_verification(store: RequestStore, poster: Poster, request_id: str, phase: str) -> None:
    """Say a verification's start or end in the request's thread (once each), and refresh
    its card; where it rolled back, put the rollback's card in the thread."""
    record = load_verification(store.redis, request_id)
    if record is None:
        return
    redis = store.redis
    request = store.get(request_id)
    card_ref = store.message_of(request_id)
    thread = card_ref or request.thread

    def once(step: str, post: Callable[[], object]) -> None:
        marker = keys.verification_step(request_id, f"told:{step}")
        if not redis.exists(marker):
            post()
            redis.set(marker, 1, ex=TOLD_KEPT)

    if phase == "started":
        once(
            "started",
            lambda: poster.post(
                request.channel, thread, verification.started_text(request, record)
            ),
        )
    elif phase == "ended":
        text = verification.ended_text(request, record, store.approval_records(request_id))
        once("ended", lambda: poster.post(request.channel, thread, text))
        if record.rollback:
            once("rollback", lambda: _post_card(store, poster, record.rollback, request, thread))
    if card_ref:
        poster.update_card(request.channel, card_ref, card_for(store, request_id))


def _post_card(
    store: RequestStore, poster: Poster, request_id: str, about: DeployRequest, thread: str | None
) -> None:
    card = card_for(store, request_id)
    ts = poster.post(about.channel, thread, card.text())
    store.bind_message(request_id, about.channel, ts)


def post_promotion(
    store: RequestStore, poster: Poster, fields: dict[str, str], offer: PromotionOffer | None
) -> None:
    """File the promotion a soak made due (once, whichever bot gets the entry) and put its
    card in the environment's channel, or say there why it was not filed."""
    env, app, version = fields.get("env", ""), fields.get("app", ""), fields.get("version", "")
    channel = fields.get("channel", "")
    if offer is None or not (env and app and version and channel):
        return
    redis = store.redis
    step = keys.auto_promotion(env, app, version)
    if redis.hget(step, "posted"):
        return
    filed = cast(bytes | None, redis.hget(step, "filed"))
    if filed is None:
        reply = offer(env, app, version)
        if reply.request_id is None:
            text = f"auto-promotion of {app} {version} to {env} not filed: {reply.text}"
            poster.post(channel, None, text)
            redis.hset(step, "posted", 1)
            redis.expire(step, TOLD_KEPT)
            return
        redis.hset(step, "filed", reply.request_id)
        redis.expire(step, TOLD_KEPT)
        request_id = reply.request_id
    else:
        request_id = filed.decode()
    card = card_for(store, request_id)
    ts = poster.post(channel, None, card.text())
    store.bind_message(request_id, channel, ts)
    poster.update_card(channel, ts, card)
    redis.hset(step, "posted", 1)
    log.info("auto-promotion of %s %s to %s filed: %s", app, version, env, request_id)


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
        self.offer_rollback = offer_rollback
        self.offer_promotion = offer_promotion
        self.links = links or Links()
        self.store = RequestStore(redis)
        self.poster = poster
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
            if kind == "promote":
                post_promotion(self.store, self.poster, fields, self.offer_promotion)
            elif request_id:
                self._post(kind, request_id, fields)
        except UnknownRequest:
            pass  # the request is gone (past its retention): nothing left to tell
        except Exception:  # any platform failure: leave it pending, retry later
            log.warning("could not post the %s of %s", kind, request_id, exc_info=True)
            return False
        self.redis.xack(self.stream, GROUP, entry_id)
        return True

    def _post(self, kind: str, request_id: str, fields: dict[str, str]) -> None:
        if kind == "rollout":
            post_rollout(self.store, self.poster, request_id, self.offer_rollback, self.links)
        elif kind == "verification":
            post_verification(self.store, self.poster, request_id, fields.get("phase", ""))
        elif kind == "note":
            # A line for the request's thread (a pull request opened, a merge refused for
            # now); the card is refreshed with it.
            request = self.store.get(request_id)
            card_ref = self.store.message_of(request_id)
            text = messages.note(request_id, fields)  # outside words made inert there
            self.poster.post(request.channel, card_ref or request.thread, text)
            if card_ref:
                self.poster.update_card(request.channel, card_ref, card_for(self.store, request_id))
        elif self.store.is_unreported(request_id):
            result = self.store.result(request_id)
            if result is not None and datetime.now(UTC) - result.finished_at > GIVE_UP_AFTER:
                log.warning("giving up posting the outcome of %s to chat", request_id)
            else:
                post_outcome(self.store, self.poster, request_id, self.links)
            self.store.mark_reported(request_id)

    def one_round(self) -> float:
        """One round for a `Supervisor`: blocks up to a second for news."""
        self.run_once(block_ms=1000)
        return 0.0
