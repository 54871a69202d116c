"""Replies back to a chat platform, the same way for every platform that has cards and threads.

A new request is posted as its card (and the card bound to the request, so
reactions and thread replies find it); refusals go privately to the asker
where the platform can; answers about a request go to its card's thread and
refresh the card.
"""

from __future__ import annotations

import logging
from typing import Protocol

from bot.cards import Card, card_for
from bot.events import NOT_CONFIRMED, ChatEvent, Reply
from config.errors import PostFailed
from workers.state.store import RequestStore

log = logging.getLogger(__name__)


class CardPoster(Protocol):
    def post(self, channel: str, thread: str | None, text: str) -> str: ...
    def ephemeral(
        self, channel: str, user: str, text: str, thread: str | None = None, name: str = ""
    ) -> None: ...
    def post_card(self, channel: str, card: Card, thread: str | None = None) -> str: ...
    def update_card(self, channel: str, ref: str, card: Card) -> None: ...


def deliver(
    store: RequestStore,
    poster: CardPoster,
    event: ChatEvent,
    replies: list[Reply],
    private_thread: str | None = None,
) -> None:
    """Post `replies` to `event`'s channel; `private_thread` is where a private answer goes."""
    for reply in replies:
        try:
            _deliver(store, poster, event, reply, private_thread or event.thread)
        except PostFailed as exc:
            log.warning("could not answer in %s: %s", event.channel_ref, exc)


def _deliver(
    store: RequestStore,
    poster: CardPoster,
    event: ChatEvent,
    reply: Reply,
    private_thread: str | None,
) -> None:
    channel = event.channel_ref
    if reply.request_id:
        ref = poster.post_card(channel, card_for(store, reply.request_id), thread=event.thread)
        store.bind_message(reply.request_id, channel, ref)
        return
    if reply.private or not reply.ok:
        poster.ephemeral(channel, event.user, reply.text, thread=private_thread, name=event.display)
        # A refusal can follow a change the card must show (the request just expired); a
        # write that may not have been recorded changes no card: it says no more than the
        # warning does.
        unsure = reply.reason == NOT_CONFIRMED
        if (
            event.thread
            and not unsure
            and (shown := store.request_for_message(channel, event.thread))
        ):
            poster.update_card(channel, event.thread, card_for(store, shown))
        return
    card_ref = store.message_of(reply.about) if reply.about else None
    poster.post(channel, card_ref or event.thread, reply.text)
    if reply.about and card_ref:
        poster.update_card(channel, card_ref, card_for(store, reply.about))
