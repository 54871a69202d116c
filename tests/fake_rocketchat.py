"""A stand-in for the Rocket.Chat REST endpoints rocketchat_API calls, on a local port.

It keeps rooms and messages (with reactions shaped like the real API's
`{":emoji:": {"usernames": [...]}}`), records every call, and answers rate
limit errors on demand.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

BOT_ID = "botid"
BOT_NAME = "releasegate"
TOO_MANY = {
    "success": False,
    "error": "Error, too many requests. Please slow down. You must wait 10 seconds before "
    "trying this endpoint again. [error-too-many-requests]",
    "errorType": "error-too-many-requests",
}


@dataclass
class FakeRocketChat:
    rooms: dict[str, str] = field(
        default_factory=lambda: {"deploy-int": "RINT", "deploy-prd": "RPRD", "random": "RRND"}
    )
    messages: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    rate_limit: dict[str, int] = field(default_factory=dict)
    tokens: tuple[str, str] = (BOT_ID, "rc-token")
    # user id -> current username; ids never change, usernames do (`rename`)
    users: dict[str, str] = field(default_factory=lambda: {BOT_ID: BOT_NAME})
    bots: set[str] = field(default_factory=set)  # user ids of bot accounts (type bot, role bot)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _clock: datetime = field(default_factory=lambda: datetime(2026, 11, 27, 9, 0, tzinfo=UTC))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _ts(self) -> str:
        self._clock += timedelta(seconds=1)
        return self._clock.isoformat().replace("+00:00", "Z")

    def id_of(self, username: str) -> str:
        """The id of the user called `username` now (a new user gets `id-NAME`)."""
        found = next((i for i, name in self.users.items() if name == username), None)
        if found is None:
            found = f"id-{username}"
            self.users[found] = username
        return found

    def rename(self, old: str, new: str) -> None:
        """A user changes their username (their id stays)."""
        with self._lock:
            self.users[self.id_of(old)] = new

    def say(self, username: str, room: str, text: str, tmid: str | None = None) -> dict[str, Any]:
        """Someone writes in a room (what a person would do in the Rocket.Chat client)."""
        with self._lock:
            message = {
                "_id": f"m{next(self._ids)}",
                "rid": self.rooms[room],
                "msg": text,
                "ts": self._ts(),
                "u": {"_id": self.id_of(username), "username": username},
            }
            if tmid:
                message["tmid"] = tmid
            self.messages.append(message)
            return message

    def react(self, username: str, message_id: str, emoji: str) -> None:
        with self._lock:
            message = next(m for m in self.messages if m["_id"] == message_id)
            who = message.setdefault("reactions", {}).setdefault(f":{emoji}:", {"usernames": []})
            who["usernames"].append(username)

    def posted(self, by: str = BOT_NAME) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m["u"]["username"] == by]

    def called(self, method: str) -> list[dict[str, Any]]:
        with self._lock:
            return [params for name, params in self.calls if name == method]

    def wait_for_posts(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(found := self.posted()) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"expected {count} post(s) by the bot, got {self.posted()}")

    def answer(
        self, method: str, params: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.calls.append((method, params))
            if (headers.get("x-user-id"), headers.get("x-auth-token")) != self.tokens:
                return 401, {"status": "error", "message": "You must be logged in to do this."}
            if self.rate_limit.get(method, 0) > 0:
                self.rate_limit[method] -= 1
                return 429, TOO_MANY
            return self._answer(method, params)

    def _answer(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if method == "me":
            return 200, {"_id": BOT_ID, "username": BOT_NAME, "success": True}
        if method == "users.info":
            if "userId" in params:
                user_id = str(params["userId"])
            else:
                user_id = next(
                    (i for i, n in self.users.items() if n == params.get("username")), ""
                )
            if user_id not in self.users:
                return 400, {"success": False, "error": "User not found. [error-invalid-user]"}
            return 200, {
                "user": {
                    "_id": user_id,
                    "username": self.users[user_id],
                    "type": "bot" if user_id in self.bots else "user",
                    "roles": ["bot"] if user_id in self.bots else ["user"],
                    "active": True,
                    "name": self.users[user_id].title(),
                },
                "success": True,
            }
        if method == "channels.info":
            name = params.get("roomName")
            if name not in self.rooms:
                return 400, {
                    "success": False,
                    "error": 'The required "roomId" or "roomName" param provided does not match any channel [error-room-not-found]',
                }
            return 200, {"channel": {"_id": self.rooms[name], "name": name}, "success": True}
        if method == "chat.postMessage":
            room = str(params["channel"]).lstrip("#")
            message = {
                "_id": f"m{next(self._ids)}",
                "rid": self.rooms[room],
                "msg": params["text"],
                "ts": self._ts(),
                "u": {"_id": BOT_ID, "username": BOT_NAME},
            }
            if params.get("tmid"):
                message["tmid"] = params["tmid"]
            self.messages.append(message)
            return 200, {"ts": 0, "channel": room, "message": message, "success": True}
        if method == "chat.update":
            message = next(m for m in self.messages if m["_id"] == params["msgId"])
            message["msg"] = params["text"]
            message["editedAt"] = self._ts()
            return 200, {"message": message, "success": True}
        if method == "chat.getMessage":
            message = next(m for m in self.messages if m["_id"] == params["msgId"])
            return 200, {"message": message, "success": True}
        if method == "channels.history":
            room = params["roomId"]
            found = [m for m in self.messages if m["rid"] == room]
            if "oldest" in params:
                found = [m for m in found if m["ts"] > params["oldest"]]
            if "latest" in params:
                found = [m for m in found if m["ts"] < params["latest"]]
            found.sort(key=lambda m: m["ts"], reverse=True)
            count = int(params.get("count", 20))
            return 200, {
                "messages": found[:count],
                "count": min(count, len(found)),
                "success": True,
            }
        return 404, {"success": False, "error": f"unknown method {method}"}


def serve(fake: FakeRocketChat, port: int = 0) -> ThreadingHTTPServer:
    """Answer as Rocket.Chat on `port` (a free one by default; pass an old one to come back)."""

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            url = urlsplit(self.path)
            method = url.path.removeprefix("/api/v1/")
            params: dict[str, Any] = dict(parse_qsl(url.query))
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                params.update(json.loads(self.rfile.read(length)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body = fake.answer(method, params, headers)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
