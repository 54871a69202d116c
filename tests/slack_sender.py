"""Signed deliveries into a releasegate server, as Slack sends them: slash commands, events
and button clicks, each with a fresh id (so two senders never look like one redelivery)."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx
from slack_sdk.signature import SignatureVerifier

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"

_deliveries = itertools.count(1)


class SlackSender:
    def __init__(self, url: str) -> None:
        self.url = url

    def post(
        self,
        body: str,
        content_type: str,
        *,
        secret: str = SECRET,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
        sent = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature,
            **(headers or {}),
        }
        return httpx.post(f"{self.url}/slack/events", content=body, headers=sent, timeout=10)

    def command(
        self, user: str, channel: str, text: str, trigger: str | None = None, **kw: Any
    ) -> httpx.Response:
        n = next(_deliveries)
        form = {
            "command": "/deploy",
            "text": text,
            "user_id": user,
            "user_name": user.lower(),
            "channel_id": channel,
            "team_id": "T1",
            "api_app_id": "A1",
            "trigger_id": trigger or f"trig{n}",
            "response_url": f"{self.url}/unused",
        }
        return self.post(urlencode(form), "application/x-www-form-urlencoded", **kw)

    def event(
        self, event: dict[str, Any], event_id: str | None = None, **kw: Any
    ) -> httpx.Response:
        n = next(_deliveries)
        body = {
            "type": "event_callback",
            "team_id": "T1",
            "api_app_id": "A1",
            "event_id": event_id or f"Ev{n}",
            "event_time": int(time.time()),
            "event": event,
        }
        return self.post(json.dumps(body), "application/json", **kw)

    def message(
        self, user: str, channel: str, text: str, thread: str | None = None, **kw: Any
    ) -> httpx.Response:
        n = next(_deliveries)
        event = {
            "type": "message",
            "user": user,
            "channel": channel,
            "text": text,
            "ts": f"1800000000.{n:06d}",
            "channel_type": "channel",
        }
        if thread:
            event["thread_ts"] = thread
        return self.event(event, **kw)

    def reaction(
        self, user: str, channel: str, ts: str, emoji: str, added: bool = True, **kw: Any
    ) -> httpx.Response:
        event = {
            "type": "reaction_added" if added else "reaction_removed",
            "user": user,
            "reaction": emoji,
            "item": {"type": "message", "channel": channel, "ts": ts},
            "event_ts": str(time.time()),
        }
        return self.event(event, **kw)

    def button(
        self,
        user: str,
        channel: str,
        ts: str,
        request_id: str,
        approve: bool = True,
        action_ts: str | None = None,
    ) -> httpx.Response:
        n = next(_deliveries)
        payload = {
            "type": "block_actions",
            "user": {"id": user},
            "team": {"id": "T1"},
            "api_app_id": "A1",
            "token": "legacy",
            "trigger_id": f"t{n}",
            "channel": {"id": channel},
            "container": {"type": "message", "message_ts": ts, "channel_id": channel},
            "message": {"ts": ts, "text": ""},
            "actions": [
                {
                    "action_id": "releasegate_approve" if approve else "releasegate_reject",
                    "block_id": f"releasegate:{request_id}",
                    "value": request_id,
                    "type": "button",
                    "action_ts": action_ts or f"{time.time()}",
                }
            ],
        }
        return self.post(
            urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded"
        )
