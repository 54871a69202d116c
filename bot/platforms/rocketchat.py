"""Rocket.Chat: messages by outgoing webhook or by polling, reactions by polling, replies by REST.

Only translation lives here. Rocket.Chat's outgoing webhooks carry messages
but never reactions and have no signature, only a token (checked in constant
time by the server). Reactions are read by polling the channels where
requests wait, one `channels.history` call per channel and round, spaced to
stay under Rocket.Chat's default limit of about ten calls per endpoint per
minute, backing off when told to slow down, and idle when nothing waits.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

from redis import Redis

from bot.conversation import Conversation
from bot.delivery import deliver
from bot.events import ChatEvent
from bot.grammar import is_decision, starts_with_verb
from bot.platforms.rocketchat_api import RateLimited, RocketChatPoster
from config.errors import PostFailed
from workers.rules.identity import rocketchat_names, save_rocketchat_ids
from workers.state import keys
from workers.state.store import MESSAGE_TTL, RequestStore

log = logging.getLogger(__name__)

CALLS_PER_MINUTE = 8  # below Rocket.Chat's default of ten per endpoint
MIN_INTERVAL = 5.0
MAX_INTERVAL = 120.0
HISTORY_PAGE = 100
MAX_PAGES = 20  # per channel and round: 2,000 messages
FOR_NOW = frozenset({"locked", "window"})  # refusals that may not hold at the next round


class RocketChatAdapter:
    def __init__(
        self, conversation: Conversation, poster: RocketChatPoster, redis: Redis, bot_user_id: str
    ) -> None:
        self.conversation = conversation
        self.poster = poster
        self.redis = redis
        self.store: RequestStore = conversation.store
        self.bot_user_id = bot_user_id
        self._bot_username: str | None = None
        self._backoff = 1.0

    @property
    def bot_username(self) -> str:
        if self._bot_username is None:
            self._bot_username = str(self.poster.call(self.poster.api.me)["username"])
        return self._bot_username

    def _channels(self) -> list[str]:
        policy = self.conversation.policy
        found = {c for env in policy.environments.values() for c in env.channels}
        return sorted(c for c in found if c.startswith("rocketchat:"))

    def _bot(self, user_id: str) -> bool:
        """Whether a bot or app account decides: taken as one when the server cannot say."""
        try:
            return self.poster.is_bot(user_id)
        except PostFailed as exc:
            log.warning("cannot tell whether %s is a bot; taken as one: %s", user_id, exc)
            return True

    # Messages, from the webhook or from polling: the same path.

    def on_message(
        self,
        user_id: str,
        username: str,
        channel: str,
        text: str,
        message_id: str,
        thread: str | None,
    ) -> bool:
        """Handle one message; False when it is not for us (or was handled before).

        Who wrote it is `user_id` alone; `username` is only how we address them."""
        if not user_id or user_id == self.bot_user_id:
            return False
        if not self.store.first_delivery("rocketchat-message", message_id):
            return False
        channel_ref = f"rocketchat:{channel}"
        mention = re.match(rf"^\s*@{re.escape(self.bot_username)}\b[:,]?\s*", text)
        if mention:
            text = text[mention.end() :]
        elif not starts_with_verb(text):
            return False
        else:
            in_request_thread = thread and self.store.request_for_message(channel_ref, thread)
            if channel_ref not in self._channels() and not in_request_thread:
                return False
        event = ChatEvent(
            platform="rocketchat",
            user=user_id,
            user_name=username,
            channel=channel,
            text=text,
            thread=thread,
            # Asked of the server only if a decision needs it, never for every command.
            bot=functools.cache(functools.partial(self._bot, user_id)),
        )
        replies = self.conversation.handle(event)
        deliver(self.store, self.poster, event, replies, private_thread=thread or message_id)
        return True

    def on_webhook(self, payload: dict[str, Any]) -> None:
        if payload.get("bot"):
            return
        self.on_message(
            user_id=str(payload.get("user_id", "")),
            username=str(payload.get("user_name", "")),
            channel=str(payload.get("channel_name", "")),
            text=str(payload.get("text", "")),
            message_id=str(payload.get("message_id", "")),
            thread=payload.get("tmid") or None,
        )

    # Who is who.

    def resolve_policy_ids(self) -> list[str]:
        """Resolve the policy's Rocket.Chat names to user ids (kept in Redis for the workers);
        returns the names that resolve to nobody."""
        found: dict[str, str] = {}
        missing = []
        for name in rocketchat_names(self.conversation.policy):
            user_id = self.poster.user_id(name)
            if user_id is None:
                missing.append(name)
            else:
                found[name] = user_id
        save_rocketchat_ids(self.redis, found)
        self.conversation.ctx.learn_rocketchat_ids(found)
        for name in missing:
            log.warning(
                "rocketchat:%s in the policy is no Rocket.Chat user; it matches nobody", name
            )
        return missing

    def resolve_round(self) -> float:
        """For a `Supervisor`: resolve now, and again later (names can be taken over)."""
        return 3600.0 if not self.resolve_policy_ids() else 300.0

    # Polling.

    def _cursor_key(self, channel: str) -> str:
        return keys.rocketchat_cursor(channel)

    def poll_messages(self, channel: str) -> int:
        """Handle the channel's messages since the cursor kept in Redis; returns how many were
        commands for us."""
        cursor = self.redis.get(self._cursor_key(channel))
        oldest = cursor.decode() if isinstance(cursor, bytes) else None
        messages = self.poster.history(channel, oldest or None, count=HISTORY_PAGE)
        # A busy channel: page back until the cursor, so no message between is skipped.
        page, pages = messages, 1
        while oldest is not None and len(page) == HISTORY_PAGE and pages < MAX_PAGES:
            page = self.poster.history(
                channel, oldest or None, count=HISTORY_PAGE, latest=str(page[-1]["ts"])
            )
            messages += page
            pages += 1
        if len(page) == HISTORY_PAGE and pages == MAX_PAGES:
            log.warning(
                "more than %d messages in %s since the last round; the older ones are skipped",
                HISTORY_PAGE * MAX_PAGES,
                channel,
            )
        if oldest is None:
            # First start: begin at the newest message instead of replaying the backlog.
            # The cursor is the server's own timestamp (never our clock); "" marks a channel
            # that was empty, where everything that comes later is new.
            self.redis.set(self._cursor_key(channel), messages[0]["ts"] if messages else "")
            return 0
        handled = 0
        for message in sorted(messages, key=lambda m: str(m["ts"])):
            if not message.get("t"):  # skip joins and other system messages
                user = message.get("u", {})
                handled += self.on_message(
                    str(user.get("_id", "")),
                    str(user.get("username", "")),
                    channel.split(":", 1)[1],
                    str(message.get("msg", "")),
                    str(message["_id"]),
                    message.get("tmid"),
                )
            self.redis.set(self._cursor_key(channel), str(message["ts"]))
        return handled

    def poll_reactions(self) -> int:
        """Read reactions on the cards of pending requests: one history call per channel."""
        waiting = self._waiting_cards()
        calls = 0
        for channel, cards in waiting.items():
            messages = self.poster.history(channel, None, count=HISTORY_PAGE)
            calls += 1
            seen = {str(m["_id"]) for m in messages}
            for card in cards.keys() - seen:  # older than a page: ask for it alone
                messages.append(self.poster.message(card))
                calls += 1
            self._count_reactions(channel, messages)
        return calls

    def _waiting_cards(self) -> dict[str, dict[str, str]]:
        """Card message id -> request id, by channel, for pending Rocket.Chat requests."""
        waiting: dict[str, dict[str, str]] = {}
        for request_id in self.store.pending_all():
            request = self.store.get(request_id)
            card = self.store.message_of(request_id)
            if request.channel.startswith("rocketchat:") and card:
                waiting.setdefault(request.channel, {})[card] = request_id
        return waiting

    def _count_reactions(self, channel: str, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            request_id = self.store.request_for_message(channel, str(message["_id"]))
            if request_id is None or not message.get("reactions"):
                continue
            for emoji, who in message["reactions"].items():
                name = emoji.strip(":")
                if not is_decision(name):
                    continue
                for username in who.get("usernames", []):
                    self._react(channel, str(message["_id"]), request_id, username, name)

    def _react(self, channel: str, card: str, request_id: str, username: str, emoji: str) -> None:
        # A reaction names a username only: who that is now is the id the server gives for it.
        user_id = self.poster.id_of_username(username)
        if user_id is None:
            log.warning("a reaction by %r, whom Rocket.Chat does not know; ignored", username)
            return
        if user_id == self.bot_user_id:
            return
        # Polls see the same reactions again and again. One that counted, or was refused for
        # good (the requester's, a non-approver's), is handled once; one refused for now (a
        # lock, a closed window) is tried again each round and counts once that has passed,
        # and its refusal is said once.
        key = keys.seen("rocketchat-reaction", f"{request_id}:{user_id}:{emoji}")
        raw = self.redis.get(key)
        seen = raw.decode() if isinstance(raw, bytes) else raw
        if seen == "handled":
            return
        event = ChatEvent(
            platform="rocketchat",
            user=user_id,
            user_name=username,
            channel=channel.split(":", 1)[1],
            text="",
            thread=card,
            bot=functools.cache(functools.partial(self._bot, user_id)),
        )
        replies = self.conversation.react(event, emoji, request_id)
        for_now = next((r.reason for r in replies if not r.ok and r.reason in FOR_NOW), None)
        state = f"refused:{for_now}" if for_now else "handled"
        self.redis.set(key, state, ex=MESSAGE_TTL)
        if seen == state:
            return  # the same refusal as last round: said already
        deliver(self.store, self.poster, event, replies)

    def poll_once(self, messages_too: bool) -> int:
        """One polling round: new messages (without a webhook), then reactions on waiting
        cards; returns the API calls it made, so the next round can be spaced by them."""
        calls = 0
        if messages_too:
            for channel in self._channels():
                self.poll_messages(channel)
                calls += 1
        return calls + self.poll_reactions()

    def poll_round(self, messages_too: bool) -> float:
        """One polling round for a `Supervisor`; returns the wait before the next one, spaced by
        the calls this round made and slower while Rocket.Chat says to slow down."""
        try:
            calls = self.poll_once(messages_too)
            self._backoff = 1.0
        except RateLimited as exc:
            self._backoff = min(self._backoff * 2, 8.0)
            log.warning("Rocket.Chat rate limit: %s; slowing down %.0fx", exc, self._backoff)
            calls = CALLS_PER_MINUTE
        interval = max(MIN_INTERVAL, 60.0 * calls / CALLS_PER_MINUTE) * self._backoff
        return min(interval, MAX_INTERVAL)
