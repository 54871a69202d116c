"""Slack: slash commands, channel messages, mentions, reactions and buttons, through slack-bolt.

Only translation lives here. Every Slack delivery becomes a `ChatEvent` (or a
reaction on a request's card) for the platform-free conversation, and its
replies become Slack calls: a new request is posted as a card with Approve /
Reject buttons, refusals are ephemeral, answers about a request go to its
thread and refresh its card. Deliveries Slack retries (same `event_id`,
`trigger_id`, or button `action_ts`) are handled once.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError
from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot import messages
from bot.conversation import Conversation
from bot.delivery import deliver
from bot.events import ChatEvent, Reply
from bot.executor import BoundedExecutor
from bot.grammar import is_decision, slash_text, starts_with_verb
from bot.platforms.slack_api import APPROVE_ACTION, REJECT_ACTION, SlackPoster
from config.errors import PostFailed
from config.settings import Settings
from workers import spans
from workers.state.store import RequestStore

log = logging.getLogger(__name__)

_MENTION = re.compile(r"^\s*<@[A-Z0-9]+>\s*")


class SlackAdapter:
    """Listeners acknowledge and hand the work to `executor`; they never wait for it."""

    def __init__(
        self, conversation: Conversation, poster: SlackPoster, executor: BoundedExecutor
    ) -> None:
        self.conversation = conversation
        self.poster = poster
        self.executor = executor
        self.store: RequestStore = conversation.store

    # Who and where.

    def _groups(self, user: str) -> frozenset[str]:
        principals = {
            p
            for env in self.conversation.policy.environments.values()
            for p in [*env.deployers, *env.approvers]
        }
        for members in self.conversation.policy.groups.values():
            principals.update(members)
        groups = set()
        for principal in principals:
            if principal.startswith("slack-group:"):
                group = principal.removeprefix("slack-group:")
                try:
                    if user in self.poster.group_members(group):
                        groups.add(principal)
                except PostFailed as exc:
                    log.warning("cannot read members of %s: %s", group, exc)
        return frozenset(groups)

    def _ours(self, body: dict[str, Any]) -> bool:
        """Whether a delivery comes from our own workspace (and enterprise) and is for our own
        app: a request signed with our secret but sent for another workspace, or another app
        of the same organisation, is refused."""
        team = body.get("team_id") or (body.get("team") or {}).get("id") or ""
        enterprise = body.get("enterprise_id") or (body.get("enterprise") or {}).get("id") or ""
        app = str(body.get("api_app_id") or "")
        try:
            our_team, our_enterprise, our_app = self.poster.workspace()
        except PostFailed as exc:
            log.warning("cannot tell our own workspace, so nothing is taken: %s", exc)
            return False
        if app != our_app:
            log.warning("refused a delivery for app %r: ours is %r", app, our_app)
            return False
        if team != our_team or ((enterprise or our_enterprise) and enterprise != our_enterprise):
            log.warning(
                "refused a delivery for workspace %r (enterprise %r): ours is %r (%r)",
                team,
                enterprise,
                our_team,
                our_enterprise,
            )
            return False
        return True

    def _bot(self, user: str) -> bool:
        try:
            return self.poster.is_bot(user)
        except PostFailed as exc:
            log.warning("cannot tell whether %s is a bot; taken as one: %s", user, exc)
            return True

    def _event(self, user: str, channel: str, text: str, thread: str | None = None) -> ChatEvent:
        """The event; whether the user is a bot is asked of Slack only if a decision needs it
        (`bot.approvals`), once, never for every command."""
        return ChatEvent(
            platform="slack",
            user=user,
            user_name=f"<@{user}>",
            channel=channel,
            text=text,
            thread=thread,
            groups=self._groups(user),
            bot=functools.cache(functools.partial(self._bot, user)),
        )

    def _deployment_channels(self) -> set[str]:
        return {c for env in self.conversation.policy.environments.values() for c in env.channels}

    def deliver(self, event: ChatEvent, replies: list[Reply]) -> None:
        deliver(self.store, self.poster, event, replies)

    # Listeners.

    def on_command(self, ack: Ack, body: dict[str, Any]) -> None:
        spans.mark("listener")
        if self.executor.submit(
            self._guarded(self._command, body.get("user_id", ""), body.get("channel_id", "")), body
        ):
            ack()
        else:
            ack(text=messages.busy())

    def _command(self, body: dict[str, Any]) -> None:
        spans.mark("handler")
        if not self._ours(body):
            return
        if not self.store.first_delivery("slack-command", str(body.get("trigger_id"))):
            return
        event = self._event(body["user_id"], body["channel_id"], slash_text(body.get("text", "")))
        replies = self.conversation.handle(event)
        spans.mark("decided")
        self.deliver(event, replies)
        spans.mark("answered")

    def _later(
        self,
        work: Callable[..., None],
        body: dict[str, Any],
        event: dict[str, Any],
        user: str,
        channel: str,
    ) -> None:
        """Events are acknowledged by Bolt already: run `work` on our pool, or say we are busy."""

        if not self.executor.submit(self._guarded(work, user, channel), body, event):
            self._tell(channel, user, messages.busy())

    def _guarded(self, work: Callable[..., None], user: str, channel: str) -> Callable[..., None]:
        """`work`, with Redis unreachable on the way (the delivery check, the card's request)
        said to the person: a command, a reaction or a button is never met with silence."""

        def guarded(*args: Any) -> None:
            try:
                work(*args)
            except RedisError as exc:
                ref = secrets.token_hex(4)
                log.error("Redis is unreachable handling a Slack delivery (ref %s): %s", ref, exc)
                self._tell(channel, user, messages.store_unreachable(ref))

        return guarded

    def _tell(self, channel: str, user: str, text: str) -> None:
        try:
            self.poster.ephemeral(f"slack:{channel}", user, text)
        except PostFailed as exc:
            log.warning("could not tell %s: %s", user, exc)

    def on_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if event.get("subtype") or event.get("bot_id") or "user" not in event:
            return  # edits, joins, bots (ourselves included)
        if not starts_with_verb(event.get("text", "")):
            return  # people talking: nothing for us, and nothing to be busy about
        self._later(self._message, body, event, event["user"], event.get("channel", ""))

    def on_mention(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if event.get("bot_id") or "user" not in event:
            return
        self._later(self._mention, body, event, event["user"], event.get("channel", ""))

    def on_reaction(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if event.get("item", {}).get("type") != "message" or "user" not in event:
            return
        if not is_decision(str(event.get("reaction", ""))):
            return
        self._later(self._reaction, body, event, event["user"], event["item"].get("channel", ""))

    def on_button(self, ack: Ack, body: dict[str, Any]) -> None:
        ack()
        channel = body.get("channel", {}).get("id", "")
        self._later(lambda body, _event: self._button(body), body, {}, body["user"]["id"], channel)

    def _message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        text = event.get("text", "")
        channel = f"slack:{event['channel']}"
        thread = event.get("thread_ts")
        in_request_thread = thread is not None and self.store.request_for_message(channel, thread)
        if channel not in self._deployment_channels() and not in_request_thread:
            return
        self._handle_text(body, event, text)

    def _mention(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        self._handle_text(body, event, _MENTION.sub("", event.get("text", ""), count=1))

    def _handle_text(self, body: dict[str, Any], event: dict[str, Any], text: str) -> None:
        if not self._ours(body):
            return
        if not self.store.first_delivery("slack-event", str(body.get("event_id"))):
            return
        chat = self._event(event["user"], event["channel"], text, event.get("thread_ts"))
        self.deliver(chat, self.conversation.handle(chat))

    def _reaction(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        item = event.get("item", {})
        if not self._ours(body):
            return
        if item.get("type") != "message" or not self.store.first_delivery(
            "slack-event", str(body.get("event_id"))
        ):
            return
        channel = f"slack:{item['channel']}"
        request_id = self.store.request_for_message(channel, item["ts"])
        if request_id is None:
            return  # a reaction on a message that is not a request
        chat = self._event(event["user"], item["channel"], "", thread=item["ts"])
        added = event["type"] == "reaction_added"
        self.deliver(chat, self.conversation.react(chat, event["reaction"], request_id, added))

    def _button(self, body: dict[str, Any]) -> None:
        action = body["actions"][0]
        user = body["user"]["id"]
        if not self._ours(body):
            return
        if not self.store.first_delivery("slack-action", f"{action.get('action_ts')}:{user}"):
            return
        verb = "approve" if action["action_id"] == APPROVE_ACTION else "reject"
        thread = body.get("container", {}).get("message_ts")
        chat = self._event(user, body["channel"]["id"], f"{verb} {action['value']}", thread)
        self.deliver(chat, self.conversation.handle(chat))


def slack_app(settings: Settings, conversation: Conversation, executor: BoundedExecutor) -> App:
    """The Bolt app: verifies every request's signature and timestamp, then translates."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    secret = settings.slack_signing_secret
    if token is None or secret is None:
        raise ValueError(
            "Slack needs RELEASEGATE_SLACK_BOT_TOKEN and RELEASEGATE_SLACK_SIGNING_SECRET"
        )
    adapter = SlackAdapter(
        conversation, SlackPoster(token, settings.slack_api_url, settings.slack_app_id), executor
    )
    app = App(
        signing_secret=secret.get_secret_value(),
        client=WebClient(token=token, base_url=adapter.poster.client.base_url),
        # Our listeners only hand the work to `executor` and return, so they can run before
        # Bolt answers: no hop through Bolt's own pool, no polling for the ack.
        process_before_response=True,
        # Start even while Slack's API is unreachable: the token is checked at the first
        # request instead (and `/readyz` says whether Slack answers).
        token_verification_enabled=False,
    )
    app.command("/deploy")(adapter.on_command)
    app.event("message")(adapter.on_message)
    app.event("app_mention")(adapter.on_mention)
    app.event("reaction_added")(adapter.on_reaction)
    app.event("reaction_removed")(adapter.on_reaction)
    app.action(APPROVE_ACTION)(adapter.on_button)
    app.action(REJECT_ACTION)(adapter.on_button)
    return app
