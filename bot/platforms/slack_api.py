"""Slack's Web API as releasegate uses it, for the bot and the worker alike.

slack_sdk's retry handlers wait out rate limits (honouring Retry-After) and
retry dropped connections; an error that remains raises `PostFailed`, and
the caller keeps the outcome to post later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from redis import Redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from bot.cards import Card
from config.errors import PostFailed
from config.policy import Policy
from workers.rules.identity import save_slack_group, slack_groups_of

APPROVE_ACTION = "releasegate_approve"
REJECT_ACTION = "releasegate_reject"
GROUP_CACHE_SECONDS = 60


def channel_id(channel_ref: str) -> str:
    return channel_ref.split(":", 1)[1]


def card_blocks(card: Card) -> list[dict[str, Any]]:
    text = card.text(mention="<@{id}>")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}
    ]
    if card.pending:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"releasegate:{card.request.id}",
                "elements": [
                    {
                        "type": "button",
                        "action_id": APPROVE_ACTION,
                        "style": "primary",
                        "text": {"type": "plain_text", "text": "Approve"},
                        "value": card.request.id,
                    },
                    {
                        "type": "button",
                        "action_id": REJECT_ACTION,
                        "style": "danger",
                        "text": {"type": "plain_text", "text": "Reject"},
                        "value": card.request.id,
                    },
                ],
            }
        )
    return blocks


class SlackPoster:
    def __init__(self, token: str, base_url: str, app_id: str = "") -> None:
        self.client = WebClient(
            token=token,
            base_url=base_url if base_url.endswith("/") else base_url + "/",
            timeout=10,
            retry_handlers=[
                RateLimitErrorRetryHandler(max_retry_count=3),
                ConnectionErrorRetryHandler(max_retry_count=2),
            ],
        )
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self._bots: dict[str, tuple[float, bool]] = {}
        self._workspace: tuple[str, str, str] | None = None
        self.app_id = app_id

    def _call(self, method: Callable[..., Any], **params: Any) -> Any:
        try:
            return method(**{k: v for k, v in params.items() if v is not None})
        except (SlackApiError, SlackClientError, OSError) as exc:
            raise PostFailed(f"Slack refused or could not be reached: {exc}") from exc

    def check_token(self) -> None:
        """Raise `PostFailed` unless Slack's API answers and takes our token."""
        self._call(self.client.auth_test)

    def workspace(self) -> tuple[str, str, str]:
        """(team id, enterprise id or "", app id) of the workspace and app our token belongs
        to: auth.test, and bots.info for the app (`app_id` when the settings name it)."""
        if self._workspace is None:
            answer = self._call(self.client.auth_test)
            app = self.app_id
            if not app and (bot := answer.get("bot_id")):
                app = str(
                    (self._call(self.client.bots_info, bot=bot).get("bot") or {}).get("app_id")
                    or ""
                )
            self._workspace = (
                str(answer.get("team_id") or ""),
                str(answer.get("enterprise_id") or ""),
                app,
            )
        return self._workspace

    def is_bot(self, user: str) -> bool:
        """Whether `user` is a bot or an app (never an approver); cached briefly."""
        cached = self._bots.get(user)
        if cached and time.monotonic() - cached[0] < GROUP_CACHE_SECONDS:
            return cached[1]
        answer = self._call(self.client.users_info, user=user)
        found = answer.get("user") or {}
        bot = bool(found.get("is_bot") or found.get("is_app_user")) or user == "USLACKBOT"
        self._bots[user] = (time.monotonic(), bot)
        return bot

    def post(self, channel: str, thread: str | None, text: str) -> str:
        response = self._call(
            self.client.chat_postMessage, channel=channel_id(channel), text=text, thread_ts=thread
        )
        return str(response["ts"])

    def ephemeral(
        self, channel: str, user: str, text: str, thread: str | None = None, name: str = ""
    ) -> None:
        self._call(
            self.client.chat_postEphemeral,
            channel=channel_id(channel),
            user=user,
            text=text,
            thread_ts=thread,
        )

    def post_card(self, channel: str, card: Card, thread: str | None = None) -> str:
        response = self._call(
            self.client.chat_postMessage,
            channel=channel_id(channel),
            text=card.title,
            blocks=card_blocks(card),
            thread_ts=thread,
        )
        return str(response["ts"])

    def update_card(self, channel: str, ts: str, card: Card) -> None:
        self._call(
            self.client.chat_update,
            channel=channel_id(channel),
            ts=ts,
            text=card.title,
            blocks=card_blocks(card),
        )

    def group_members(self, group: str, fresh: bool = False) -> frozenset[str]:
        """Members of a Slack user group (`S…`), cached briefly (read anew with `fresh`)."""
        cached = self._groups.get(group)
        if cached and not fresh and time.monotonic() - cached[0] < GROUP_CACHE_SECONDS:
            return cached[1]
        response = self._call(self.client.usergroups_users_list, usergroup=group)
        members = frozenset(response.get("users", []))
        self._groups[group] = (time.monotonic(), members)
        return members


def refresh_slack_groups(redis: Redis, poster: SlackPoster, policy: Policy) -> list[str]:
    """Read every Slack user group the policy names anew and keep the members in Redis for
    the workers' re-check at commit time; returns the groups read."""
    groups = slack_groups_of(policy)
    for group in groups:
        save_slack_group(redis, group, poster.group_members(group, fresh=True), time.time())
    return groups
