"""Telling one outbox entry where it belongs: the one place each kind of news is worded and
posted, for every bot replica's outbox consumer (`bot/reports.py`) and for the shell.

A `Teller` takes an entry's fields and acts by its `Kind`: a request's outcome, how its
rollout went (with a rollback offered where an app degraded), a worker's note, a
verification's start, progress and end (with releasegate's own rollback's card), and a
promotion a soak made due. Each step is marked done in Redis as soon as it happened, so a
retry after chat refused a later post repeats only what did not happen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, cast

from bot import messages, rollouts, verification
from bot.cards import Card, card_for
from bot.events import Reply
from workers.rollout.follow import load as load_rollout
from workers.rollout.verify import load as load_verification
from workers.state import keys
from workers.state.outbox import Kind
from workers.state.request import DeployRequest, Result
from workers.state.store import RequestStore

log = logging.getLogger(__name__)

GIVE_UP_AFTER = timedelta(days=1)
TOLD_KEPT = 30 * 24 * 3600  # seconds a "told" marker is kept


class Poster(Protocol):
    def post(self, channel: str, thread: str | None, text: str) -> str: ...
    def update_card(self, channel: str, ref: str, card: Card) -> None: ...


@dataclass(frozen=True)
class Links:
    """Where people click: a commit's page on the forge, an application in Argo CD."""

    commit: Callable[[str, str], str | None] = lambda repository, sha: None
    application: Callable[[str], str | None] = lambda name: None


def post_outcome(
    store: RequestStore,
    poster: Poster,
    request_id: str,
    links: Links | None = None,
    result: Result | None = None,
) -> None:
    """Say how the request ended in its thread and refresh its card; raises if chat refuses.
    `result` where the caller has read it already."""
    request = store.get(request_id)
    result = result or store.result(request_id)
    if result is None:
        return
    card_ref = store.message_of(request_id)
    landed = result.commits or ({"": result.commit} if result.commit else {})
    urls = [url for name, sha in landed.items() if (url := (links or Links()).commit(name, sha))]
    text = outcome_text(store, request, result, urls)
    poster.post(request.channel, card_ref or request.thread, text)
    if card_ref:
        poster.update_card(request.channel, card_ref, card_for(store, request_id, request, result))


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
    read_only: bool = False,
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

    if read_only or not redis.exists(step("told")):
        # One application followed: link it (a train's summary names each instead).
        names = {t.name for t in record.targets}
        url = (links or Links()).application(names.pop()) if len(names) == 1 else None
        poster.post(request.channel, thread, rollouts.rollout_news(request, record, url))
        if read_only:
            return
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
                text = rollouts.rollback_not_offered(target.app, request.env, reply.text)
                poster.post(request.channel, thread, text)
                redis.set(step(f"posted:{target.app}"), 1, ex=TOLD_KEPT)
                continue
            redis.set(step(f"filed:{target.app}"), reply.request_id, ex=TOLD_KEPT)
            rollback_id = reply.request_id
        else:
            rollback_id = filed.decode()
        ts, card = post_card(store, poster, rollback_id, request.channel, thread)
        redis.set(step(f"posted:{target.app}"), 1, ex=TOLD_KEPT)
        poster.update_card(request.channel, ts, card)


def post_verification(
    store: RequestStore, poster: Poster, request_id: str, phase: str, read_only: bool = False
) -> None:
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
        if read_only or not redis.exists(marker):
            post()
            if not read_only:
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
        if record.rollback and not read_only:
            rollback = record.rollback
            once("rollback", lambda: post_card(store, poster, rollback, request.channel, thread))
    if card_ref:
        poster.update_card(request.channel, card_ref, card_for(store, request_id))


def post_card(
    store: RequestStore, poster: Poster, request_id: str, channel: str, thread: str | None
) -> tuple[str, Card]:
    """Put a new request's card in `channel` (in `thread`) and bind it to the request, so
    reactions and buttons on it decide it; returns where it is, for drawing its buttons
    (`update_card`) once the caller noted it posted."""
    card = card_for(store, request_id)
    ts = poster.post(channel, thread, card.text())
    store.bind_message(request_id, channel, ts)
    return ts, card


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
    ts, card = post_card(store, poster, request_id, channel, None)
    poster.update_card(channel, ts, card)
    redis.hset(step, "posted", 1)
    log.info("auto-promotion of %s %s to %s filed: %s", app, version, env, request_id)


@dataclass
class Teller:
    """Tells outbox entries through `poster`. With `read_only` it words each entry and marks,
    files and offers nothing (to read what a stream says, as tests do)."""

    store: RequestStore
    poster: Poster
    links: Links = field(default_factory=Links)
    offer_rollback: RollbackOffer | None = None
    offer_promotion: PromotionOffer | None = None
    read_only: bool = False

    def tell(self, fields: dict[str, str]) -> None:
        """Act on one entry; raises when chat refused (the entry stays to be told again)."""
        try:
            kind = Kind(fields.get("kind") or Kind.OUTCOME)
        except ValueError:
            log.warning("an outbox entry of an unknown kind: %s", fields.get("kind"))
            return
        request_id = fields.get("request", "")
        store, poster = self.store, self.poster
        offer_rollback = None if self.read_only else self.offer_rollback
        match kind:
            case Kind.PROMOTE:
                if self.read_only:
                    app, version = fields.get("app"), fields.get("version")
                    what = f"promote {app} {version} to {fields.get('env')}"
                    poster.post(fields.get("channel", ""), None, what)
                else:
                    post_promotion(store, poster, fields, self.offer_promotion)
            case Kind.ROLLOUT:
                post_rollout(store, poster, request_id, offer_rollback, self.links, self.read_only)
            case Kind.VERIFICATION:
                phase = fields.get("phase", "")
                post_verification(store, poster, request_id, phase, self.read_only)
            case Kind.NOTE:
                # A line for the request's thread (a merge request opened, a merge refused
                # for now); the card is refreshed with it.
                request = store.get(request_id)
                card_ref = store.message_of(request_id)
                text = messages.note(request_id, fields)  # outside words made inert there
                poster.post(request.channel, card_ref or request.thread, text)
                if card_ref:
                    poster.update_card(request.channel, card_ref, card_for(store, request_id))
            case Kind.OUTCOME:
                if self.read_only:
                    post_outcome(store, poster, request_id, self.links)
                elif store.is_unreported(request_id):
                    result = store.result(request_id)
                    if (
                        result is not None
                        and datetime.now(UTC) - result.finished_at > GIVE_UP_AFTER
                    ):
                        log.warning("giving up posting the outcome of %s to chat", request_id)
                    else:
                        post_outcome(store, poster, request_id, self.links, result)
                    store.mark_reported(request_id)
