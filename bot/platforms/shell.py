"""A chat in the terminal: the shell is a platform like Slack, and the test backend for all.

Lines are messages from the current user in the current channel; a few
slash commands change who and where you are. The worker's reports arrive
through the shell outbox stream and are printed as they come (interactive)
or after each line's jobs are done (reading a script from stdin).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO, cast

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Worker

from bot.cards import Card
from bot.conversation import Conversation
from bot.events import ChatEvent, Reply
from bot.grammar import VERBS, is_decision
from bot.telling import Teller
from config.policy import Policy
from workers.rollout.verify import load as load_verification
from workers.state import audit
from workers.state.outbox import stream
from workers.state.queue import job_queue
from workers.state.request import RequestState
from workers.state.store import RequestStore

SHELL_HELP = (
    "/as USER        speak as USER\n"
    "/audit [N]      the last N entries of the audit trail (20)\n"
    "/in CHANNEL     speak in CHANNEL\n"
    "/react EMOJI [ID]  react to a request (the latest one here if no ID)\n"
    "/wait           wait for queued deploys to finish\n"
    "/quit           leave"
)
JOB_WAIT_SECONDS = 180.0
NO_WORKER_GRACE = 10.0  # seconds before a wait without any registered worker is said
SHELL_OUTBOX = stream("shell")
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
HISTORY_LINES = 1000


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
        try:
            if line.startswith("/"):
                return self._slash(line)
            if not self.user or not self.channel:
                self.say("set who and where you are first: /as USER, /in CHANNEL")
                return []
            replies = self.conversation.handle(self._event(line))
        except REDIS_DOWN as exc:
            self.say(f"releasegate: cannot reach Redis right now ({exc}); try again in a moment")
            return []
        self._show(replies)
        return replies

    def _event(self, text: str) -> ChatEvent:
        return ChatEvent(
            platform="shell", user=self.user, user_name=self.user, channel=self.channel, text=text
        )

    def _show(self, replies: list[Reply]) -> None:
        for reply in replies:
            # Noted before printing: a Ctrl-C while it prints still waits for what was queued.
            self.queued.extend(reply.queued)
            if reply.request_id:
                self.last_request[self.channel] = reply.request_id
            prefix = "releasegate" + ("" if reply.ok else " (refused)")
            self.say(f"{prefix}: {reply.text}")

    def _slash(self, line: str) -> list[Reply]:
        verb, _, rest = line.partition(" ")
        rest = rest.strip()
        if verb in ("/as", "/in") and not rest:
            self.say(f"usage: {verb} {'USER' if verb == '/as' else 'CHANNEL'}")
        elif verb == "/as":
            self.user = rest
        elif verb == "/in":
            self.channel = rest.lstrip("#")
        elif verb == "/react" and rest:
            emoji, _, request_id = rest.partition(" ")
            if not is_decision(emoji):
                self.say(
                    f"the reaction {emoji} means nothing to releasegate: ✅ (or 👍) "
                    "approves, ❌ rejects"
                )
                return []
            target = request_id.strip().upper() or self.last_request.get(self.channel)
            if not target:
                self.say("no request to react to here; give its id")
                return []
            return self._react(emoji, target)
        elif verb == "/wait":
            if not any(not self.store.state(r).final for r in self.queued):
                self.say("nothing queued from this shell is still running")
            self.wait()
        elif verb == "/audit":
            count = int(rest) if rest.isdigit() and int(rest) > 0 else 20
            for entry in audit.read(self.redis, count):
                self.say(entry.line())
        elif verb in ("/help", "/?"):
            self.say(SHELL_HELP)
        else:
            known = "/as, /in, /react, /wait, /audit, /help, /quit"
            self.say(f"unknown shell command {verb} (or it needs an argument); these are: {known}")
        return []

    def _react(self, emoji: str, request_id: str) -> list[Reply]:
        replies = self.conversation.react(self._event(""), emoji, request_id)
        self._show(replies)
        return replies

    def wait(self, timeout: float = JOB_WAIT_SECONDS) -> bool:
        """Wait until every request this shell queued has ended; print the worker's reports."""
        deadline = time.monotonic() + timeout
        started, told = time.monotonic(), False
        while time.monotonic() < deadline:
            if all(self._settled(r) for r in self.queued):
                break
            # A worker that is starting (the demo's) registers within seconds: say nothing yet.
            late = time.monotonic() - started > NO_WORKER_GRACE
            if not told and late and not Worker.all(queue=job_queue(self.redis)):
                self.say(
                    f"no worker is running: start `releasegate worker` with the same "
                    f"settings; waiting up to {timeout:.0f}s"
                )
                told = True
            time.sleep(0.1)
        else:
            self.say(f"gave up waiting after {timeout:.0f}s; is a worker running?")
            return False
        self.drain_outbox()
        return True

    def _settled(self, request_id: str) -> bool:
        """The request ended, and so did its verification (and the rollback it filed)."""
        if not self.store.state(request_id).final:
            return False
        checked = load_verification(self.redis, request_id)
        if checked is None:
            return True
        return checked.ended and (not checked.rollback or self.store.state(checked.rollback).final)

    def drain_outbox(self, block_ms: int | None = None, reprompt: bool = False) -> None:
        """Print what the workers queued for the shell's channels since the last look, told
        as every platform tells it (`bot/telling.py`)."""
        entries = cast(
            list[Any], self.redis.xread({SHELL_OUTBOX: self._outbox_cursor}, block=block_ms)
        )
        conversation = self.conversation
        teller = Teller(
            self.store,
            _ShellPoster(self, reprompt),
            offer_rollback=conversation.offer_rollback,
            offer_promotion=conversation.offer_promotion,
        )
        for _stream, batch in entries or []:
            for entry_id, fields in batch:
                self._outbox_cursor = entry_id.decode()
                teller.tell({k.decode(): v.decode() for k, v in fields.items()})

    def succeeded(self) -> bool:
        ok = {RequestState.PUSHED, RequestState.MERGED, RequestState.NOOP}
        return all(self.store.state(r) in ok for r in self.queued)

    def run_script(self, lines: Iterable[str]) -> bool:
        """Read a conversation; each line's deploys finish before the next line is read."""
        for line in lines:
            if line.strip():
                self.say(f"{self.prompt}{line.rstrip()}")
            if line.strip() in ("/quit", "/exit"):  # as at the prompt: the rest is not read
                break
            before = len(self.queued)
            self.handle_line(line)
            if len(self.queued) > before:
                self.wait()
        return self.wait() and self.succeeded()

    def run_interactive(self, history: Path | None = None) -> None:
        """Read lines with editing and history (readline) until /quit, Ctrl-D or Ctrl-C; on the
        way out, wait for what this shell queued (a second Ctrl-C leaves at once).

        Ctrl-C is taken only at the prompt and while waiting: SIGINT stays blocked in every
        other moment and in every other thread (they inherit the mask). So a command is never
        cut off half-done, and the signal always reaches the main thread's readline; one
        handed to a background thread would not wake it, and the shell would not leave.
        """
        _line_editing(history, self.completions)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        stop = threading.Event()

        def tail() -> None:
            while not stop.is_set():
                try:
                    self.drain_outbox(block_ms=500, reprompt=True)
                except REDIS_DOWN:  # said where it matters: at the next line typed
                    stop.wait(1.0)

        thread = threading.Thread(target=tail, name="shell-outbox", daemon=True)
        thread.start()
        self.say("releasegate shell: type `help`, or /help for shell commands")
        try:
            while True:
                try:
                    with _interruptible():
                        line = input(self.prompt)
                except (EOFError, KeyboardInterrupt):
                    self.say("")
                    break
                if line.strip() in ("/quit", "/exit"):
                    break
                self.handle_line(line)
            self.leave()
        finally:
            stop.set()
            thread.join(timeout=2)
            _save_history(history)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    def completions(self, before: str = "") -> list[str]:
        """What Tab completes after `before` (the line up to the word being typed): a command
        or the shell's own first, then apps, environments and the grammar's little words,
        never a shell command in the middle of a line."""
        policy = self.conversation.policy
        if not before.strip():
            slash = ["/as", "/in", "/react", "/wait", "/audit", "/help", "/quit"]
            return sorted({*VERBS, *slash})
        if before.split()[0].startswith("/"):
            return sorted(_channels_and_people(policy))
        envs = [name for name, env in policy.environments.items() for name in [name, *env.aliases]]
        return sorted({*policy.apps, *envs, "to", "in", "all", "reason"})

    def leave(self) -> None:
        try:
            running = [r for r in self.queued if not self.store.state(r).final]
            if running:
                self.say(
                    f"waiting for {len(running)} queued deploy(s) to finish "
                    "(Ctrl-C again leaves now; the worker finishes them anyway)"
                )
                with _interruptible():
                    self.wait()
        except KeyboardInterrupt:
            self.say("")
        except REDIS_DOWN as exc:
            self.say(f"cannot reach Redis to see the queued deploys ({exc}); leaving")


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Let Ctrl-C in (in this thread) for the duration; a Ctrl-C typed meanwhile arrives now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _channels_and_people(policy: Policy) -> set[str]:
    """What `/in` and `/as` take: the shell's channels and people in the policy."""
    channels = {c.removeprefix("shell:") for e in policy.environments.values() for c in e.channels}
    people = {
        p.removeprefix("shell:")
        for members in policy.groups.values()
        for p in members
        if p.startswith("shell:")
    }
    return {c for c in channels if ":" not in c} | people


def _line_editing(history: Path | None, words: Callable[[str], list[str]]) -> None:
    """Arrow keys, editing, history and Tab completion (of `words`) at the prompt, where the
    platform has readline."""
    try:
        import readline
    except ImportError:  # Windows without pyreadline: plain input() still works
        return
    readline.set_history_length(HISTORY_LINES)

    def complete(text: str, state: int) -> str | None:
        before = readline.get_line_buffer()[: readline.get_begidx()]
        found = [w for w in words(before) if w.startswith(text)]
        return found[state] + " " if state < len(found) else None

    readline.set_completer_delims(" \t")
    readline.set_completer(complete)
    readline.parse_and_bind("tab: complete")
    if history is not None:
        with contextlib.suppress(OSError):
            readline.read_history_file(history)


def _save_history(history: Path | None) -> None:
    if history is None:
        return
    try:
        import readline
    except ImportError:
        return
    with contextlib.suppress(OSError):
        readline.write_history_file(history)


class _ShellPoster:
    """Posts the outbox's news to the terminal, as the worker's lines are printed (the shell
    has no cards to edit)."""

    def __init__(self, chat: ShellChat, reprompt: bool) -> None:
        self.chat, self.reprompt = chat, reprompt

    def post(self, channel: str, thread: str | None, text: str) -> str:
        line = f"[{channel.removeprefix('shell:')}] releasegate (worker): {text}"
        if self.reprompt:
            self.chat.say(f"\r{line}\n{self.chat.prompt}", end="")
        else:
            self.chat.say(line)
        return f"shell-{time.time_ns()}"

    def update_card(self, channel: str, ref: str, card: Card) -> None:
        return None
