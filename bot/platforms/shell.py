"""A chat in the terminal: the shell is a platform like Slack, and the test backend for all.

Lines are messages from the current user in the current channel; a few
slash commands change who and where you are. The worker's reports arrive
through the shell outbox stream and are printed as they come (interactive)
or after each line's jobs are done (reading a script from stdin).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO, cast

from redis import Redis

from bot import messages
from bot.conversation import Conversation
from bot.events import ChatEvent, Reply
from workers.outbox import stream
from workers.request import RequestState
from workers.store import RequestStore

SHELL_HELP = (
    "/as USER        speak as USER\n"
    "/in CHANNEL     speak in CHANNEL\n"
    "/react EMOJI [ID]  react to a request (the latest one here if no ID)\n"
    "/wait           wait for queued deploys to finish\n"
    "/quit           leave"
)
JOB_WAIT_SECONDS = 180.0
SHELL_OUTBOX = stream("shell")


class ShellChat:
    def __init__(
        self,
        conversation: Conversation,
        redis: Redis,
        out: TextIO,
        user: str = "",
        channel: str = "",
    ) -> None:
        self.conversation = conversation
        self.redis = redis
        self.store = RequestStore(redis)
        self.out = out
        self.user = user
        self.channel = channel
        self.queued: list[str] = []
        self.last_request: dict[str, str] = {}
        self._print_lock = threading.Lock()
        last = cast(list[Any], redis.xrevrange(SHELL_OUTBOX, count=1))
        self._outbox_cursor = last[0][0].decode() if last else "0-0"

    def say(self, text: str, end: str = "\n") -> None:
        with self._print_lock:
            self.out.write(text + end)
            self.out.flush()

    @property
    def prompt(self) -> str:
        return f"{self.user or '?'}@{self.channel or '?'}> "

    def handle_line(self, line: str) -> list[Reply]:
        line = line.rstrip("\r\n")
        if not line.strip():
            return []
        if line.startswith("/"):
            return self._slash(line)
        if not self.user or not self.channel:
            self.say("set who and where you are first: /as USER, /in CHANNEL")
            return []
        replies = self.conversation.handle(self._event(line))
        self._show(replies)
        return replies

    def _event(self, text: str) -> ChatEvent:
        return ChatEvent(platform="shell", user=self.user, user_name=self.user,
                         channel=self.channel, text=text)  # fmt: skip

    def _show(self, replies: list[Reply]) -> None:
        for reply in replies:
            prefix = "releasegate" + ("" if reply.ok else " (refused)")
            self.say(f"{prefix}: {reply.text}")
            if reply.request_id:
                self.last_request[self.channel] = reply.request_id
            self.queued.extend(reply.queued)

    def _slash(self, line: str) -> list[Reply]:
        verb, _, rest = line.partition(" ")
        rest = rest.strip()
        if verb == "/as" and rest:
            self.user = rest
        elif verb == "/in" and rest:
            self.channel = rest.lstrip("#")
        elif verb == "/react" and rest:
            emoji, _, request_id = rest.partition(" ")
            target = request_id.strip().upper() or self.last_request.get(self.channel)
            if not target:
                self.say("no request to react to here; give its id")
                return []
            replies = self.conversation.react(self._event(""), emoji.strip(":"), target)
            self._show(replies)
            return replies
        elif verb == "/wait":
            self.wait()
        else:
            self.say(SHELL_HELP)
        return []

    def wait(self, timeout: float = JOB_WAIT_SECONDS) -> bool:
        """Wait until every request this shell queued has ended; print the worker's reports."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.store.state(r).final for r in self.queued):
                break
            time.sleep(0.1)
        else:
            self.say(f"gave up waiting after {timeout:.0f}s; is a worker running?")
            return False
        self.drain_outbox()
        return True

    def drain_outbox(self, block_ms: int | None = None, reprompt: bool = False) -> None:
        entries = cast(
            list[Any], self.redis.xread({SHELL_OUTBOX: self._outbox_cursor}, block=block_ms)
        )
        for _stream, batch in entries or []:
            for entry_id, fields in batch:
                self._outbox_cursor = entry_id.decode()
                request_id = fields[b"request"].decode()
                result = self.store.result(request_id)
                if result is None or not self.store.is_unreported(request_id):
                    continue
                request = self.store.get(request_id)
                self.store.mark_reported(request_id)
                channel = request.channel.removeprefix("shell:")
                text = f"[{channel}] releasegate (worker): {messages.outcome(request, result)}"
                # At an interactive prompt, print over it and draw it again below.
                if reprompt:
                    self.say(f"\r{text}\n{self.prompt}", end="")
                else:
                    self.say(text)

    def succeeded(self) -> bool:
        ok = {RequestState.PUSHED, RequestState.NOOP}
        return all(self.store.state(r) in ok for r in self.queued)

    def run_script(self, lines: Iterable[str]) -> bool:
        """Read a conversation; each line's deploys finish before the next line is read."""
        for line in lines:
            if line.strip():
                self.say(f"{self.prompt}{line.rstrip()}")
            before = len(self.queued)
            self.handle_line(line)
            if len(self.queued) > before:
                self.wait()
        return self.wait() and self.succeeded()

    def run_interactive(self) -> None:
        stop = threading.Event()

        def tail() -> None:
            while not stop.is_set():
                self.drain_outbox(block_ms=500, reprompt=True)

        thread = threading.Thread(target=tail, name="shell-outbox", daemon=True)
        thread.start()
        self.say("releasegate shell: type `help`, or /help for shell commands")
        try:
            while True:
                try:
                    line = input(self.prompt)
                except EOFError:
                    break
                if line.strip() in ("/quit", "/exit"):
                    break
                self.handle_line(line)
        finally:
            stop.set()
            thread.join(timeout=2)
