"""A stand-in for Slack's Web API on a local port: answers like Slack and records every call.

Point `RELEASEGATE_SLACK_API_URL` here to run `releasegate serve` with no Slack at all:
the tests do (as bolt-python's own tests do with their mock Web API server), and so does
`scripts/bench.py`, which drives the server through Slack's front door. It is not used by
`serve` itself.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

BOT_USER = "UBOT"


@dataclass
class Call:
    method: str
    params: dict[str, Any]


@dataclass
class FakeSlack:
    calls: list[Call] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)
    # method -> how many more times to answer 429 (rate limited) before answering normally
    rate_limit: dict[str, int] = field(default_factory=dict)
    # method -> how many more times to answer an error
    fail: dict[str, int] = field(default_factory=dict)
    # method -> how many more times to answer 503, as Slack does when it is having a bad day
    unavailable: dict[str, int] = field(default_factory=dict)
    # text -> how many more times to refuse a message containing it (a refusal mid-sequence)
    refuse_text: dict[str, int] = field(default_factory=dict)
    bots: set[str] = field(default_factory=set)  # user ids that users.info calls bots
    team: str = "T1"  # the workspace auth.test names
    app: str = "A1"  # the app bots.info names for our bot
    socket_url: str = ""  # what apps.connections.open hands out (a Socket Mode stand-in)
    _counter: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(
        self, method: str, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            if self.rate_limit.get(method, 0) > 0:
                self.rate_limit[method] -= 1
                self.calls.append(Call(method + " (rate limited)", params))
                return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"}
            text = str(params.get("text", ""))
            if refused := next(
                (t for t, n in self.refuse_text.items() if n > 0 and t in text), None
            ):
                self.refuse_text[refused] -= 1
                self.calls.append(Call(method + " (unavailable)", params))
                return 503, {"ok": False, "error": "service_unavailable"}, {}
            if self.unavailable.get(method, 0) > 0:
                self.unavailable[method] -= 1
                self.calls.append(Call(method + " (unavailable)", params))
                return 503, {"ok": False, "error": "service_unavailable"}, {}
            if self.fail.get(method, 0) > 0:
                self.fail[method] -= 1
                self.calls.append(Call(method + " (failed)", params))
                return 200, {"ok": False, "error": "channel_not_found"}, {}
            self.calls.append(Call(method, params))
            self._counter += 1
            ts = f"{1700000000 + self._counter}.000100"
        if method == "auth.test":
            return (
                200,
                {
                    "ok": True,
                    "user_id": BOT_USER,
                    "bot_id": "BBOT",
                    "team_id": self.team,
                    "user": "releasegate",
                    "url": "https://acme.slack.com/",
                },
                {},
            )
        if method == "bots.info":
            bot = {"id": params.get("bot"), "app_id": self.app, "name": "releasegate"}
            return 200, {"ok": True, "bot": bot}, {}
        if method == "chat.postMessage":
            return (
                200,
                {
                    "ok": True,
                    "channel": params.get("channel"),
                    "ts": ts,
                    "message": {"text": params.get("text"), "ts": ts},
                },
                {},
            )
        if method == "chat.postEphemeral":
            return 200, {"ok": True, "message_ts": ts}, {}
        if method == "users.info":
            user = str(params.get("user"))
            found = {"id": user, "is_bot": user in self.bots, "deleted": False}
            return 200, {"ok": True, "user": found}, {}
        if method == "apps.connections.open":
            return 200, {"ok": True, "url": self.socket_url}, {}
        if method == "usergroups.users.list":
            return 200, {"ok": True, "users": self.groups.get(str(params.get("usergroup")), [])}, {}
        return 200, {"ok": True, "channel": params.get("channel"), "ts": params.get("ts", ts)}, {}

    def called(self, method: str) -> list[dict[str, Any]]:
        with self._lock:
            return [c.params for c in self.calls if c.method == method]

    def wait_for(self, method: str, count: int = 1, timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.called(method)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"expected {count} {method} call(s), got {self.called(method)}")

    def texts(self, method: str = "chat.postMessage") -> list[str]:
        return [str(p.get("text")) for p in self.called(method)]


def _parse(body: bytes, content_type: str) -> dict[str, Any]:
    if not body:
        return {}
    if content_type.startswith("application/json"):
        return dict(json.loads(body))
    params: dict[str, Any] = dict(parse_qsl(body.decode()))
    for key in ("blocks", "attachments"):
        if key in params:
            params[key] = json.loads(params[key])
    return params


def serve(fake: FakeSlack, port: int = 0) -> ThreadingHTTPServer:
    """Answer as Slack on `port` (a free one by default; pass an old one to come back)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            method = self.path.rsplit("/", 1)[-1].split("?")[0]
            length = int(self.headers.get("Content-Length") or 0)
            params = _parse(self.rfile.read(length), self.headers.get("Content-Type", ""))
            status, body, headers = fake.answer(method, params)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
