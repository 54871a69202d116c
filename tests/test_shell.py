"""The shell and the demo at a real terminal (a pseudo-terminal): line editing and history,
Ctrl-C, reactions typed as emoji, unknown commands, Redis going away, and logs kept out of the
conversation."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

from redis import Redis

from bot.conversation import Conversation
from bot.embedded_redis import EmbeddedRedis
from tests.conftest import Remote
from tests.test_cli import releasegate, settings_env

UP = b"\x1b[A"
CTRL_C = b"\x03"


class Terminal:
    """A process on a pseudo-terminal of its own, read and typed into as a person would."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")}
        argv = [sys.executable, "-m", "bot.cli", *args]
        pid, fd = pty.fork()
        if pid == 0:  # the child: a session leader whose controlling terminal is the pty
            try:
                os.chdir(cwd)
                os.execve(sys.executable, argv, {**clean, **env, "TERM": "xterm"})  # noqa: S606
            finally:
                os._exit(127)  # never go on running the test session in the child
        self.pid, self.fd = pid, fd
        self.output = b""
        self._seen = 0

    def expect(self, text: str, timeout: float = 90) -> str:
        """Read until `text` appears after what earlier calls consumed; returns what was read."""
        wanted = text.encode()
        deadline = time.monotonic() + timeout
        while wanted not in self.output[self._seen :]:
            left = deadline - time.monotonic()
            assert left > 0, (
                f"no {text!r} in:\n{self.output[self._seen :].decode(errors='replace')}"
            )
            if not self._read(min(left, 0.5)):
                assert self.exit_code() is None, f"exited before {text!r}:\n{self.text}"
        end = self.output.index(wanted, self._seen) + len(wanted)
        chunk, self._seen = self.output[self._seen : end], end
        return chunk.decode(errors="replace")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # the other end closed: the process exited
            return False
        self.output += data
        return bool(data)

    def type(self, data: bytes | str) -> None:
        os.write(self.fd, data.encode() if isinstance(data, str) else data)

    def exit_code(self) -> int | None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        self._status = os.waitstatus_to_exitcode(status)
        return self._status

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.exit_code()) is None:
            assert time.monotonic() < deadline, f"still running:\n{self.text}"
            self._read(0.2)
        while self._read(0.1):
            pass
        return code

    def close(self) -> None:
        try:
            if self.exit_code() is None:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        os.close(self.fd)

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")


def test_ctrl_c_in_the_demo_waits_for_the_queued_deploy_then_leaves_without_a_traceback(
    tmp_path: Path,
) -> None:
    demo = tmp_path / "demo"
    term = Terminal(["demo", "--dir", str(demo)], {}, tmp_path)
    try:
        term.expect("alice@deploy-int> ")
        term.type("deploy awesome 2.1.0 to int\r")
        term.expect("queued")
        term.expect("alice@deploy-int> ")
        # As a person would: not within microseconds of the prompt. CPython's readline loses
        # a SIGINT that lands between its last signal check and its select() on stdin, until
        # the next key is pressed; a Ctrl-C typed at a prompt that is already waiting is seen.
        time.sleep(0.3)
        term.type(CTRL_C)
        assert term.wait(timeout=120) == 0, term.text
    finally:
        term.close()
    assert "pushed" in term.text
    assert "Traceback" not in term.text
    assert Remote(demo / "remote.git").count() == 2  # the queued deploy landed
    assert "releasegate (worker): R" in term.text


def test_the_shell_has_line_editing_and_history(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    term = Terminal(["demo", "--dir", str(demo)], {}, tmp_path)
    try:
        term.expect("alice@deploy-int> ")
        term.type("status it\x1b[Dn\x1b[C\r")  # type, move left, insert, move right, Enter
        term.expect("awesome: int 2.0.0")
        term.expect("alice@deploy-int> ")
        term.type(UP + b"\r")  # the line again, from history
        term.expect("awesome: int 2.0.0")
        term.type("/quit\r")
        assert term.wait() == 0
    finally:
        term.close()
    assert "\x1b[A" not in term.text.split("status int", 1)[1]  # no escape code as text
    assert "Traceback" not in term.text


def test_the_shell_says_when_redis_is_gone_and_goes_on_when_it_is_back(
    tmp_path: Path, policy_file: Path
) -> None:
    with EmbeddedRedis(tmp_path / "redis") as redis_server:
        env = settings_env(policy_file, redis_server.url, tmp_path / "work")
        term = Terminal(["shell", "--as", "alice", "--channel", "deploy-int"], env, tmp_path)
        try:
            term.expect("alice@deploy-int> ")
            term.type("status int\r")
            term.expect("awesome: int 2.0.0")
            redis_server.kill()
            term.type("deploy awesome 2.1.0 to int\r")
            term.expect("cannot reach its Redis right now")
            redis_server.start()
            term.type("status int\r")
            term.expect("awesome: int 2.0.0")
            term.type("/quit\r")
            assert term.wait() == 0
        finally:
            term.close()
    assert "Traceback" not in term.text


REACTIONS = """\
/wait
/as alice
deploy awesome 2.1.0 to int
/in deploy-prd
deploy awesome 2.1.0 to prd
/as carol
/react 🎉
/react ✅
/foo
/wait
status RZZZZZZ
"""


def test_reactions_typed_as_emoji_count_and_unknown_ones_or_commands_are_named(
    tmp_path: Path,
) -> None:
    done = releasegate("demo", "--dir", str(tmp_path / "demo"), stdin=REACTIONS)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "the reaction 🎉 means nothing to releasegate: ✅ (or 👍) approves, ❌ rejects" in out
    assert "approved by carol (1/1); queued" in out
    assert "unknown shell command /foo" in out
    assert "> /wait\nnothing queued from this shell is still running" in out
    assert "pushed" in out
    # The log's warning about the unknown request stays in the log file.
    assert "WARNING" not in out
    assert "RZZZZZZ" in (tmp_path / "demo" / "releasegate.log").read_text()


def test_thumbsup_as_rocketchat_names_it_approves(tmp_path: Path) -> None:
    script = (
        "deploy awesome 2.1.0 to int\n/in deploy-prd\ndeploy awesome 2.1.0 to prd\n"
        "/as carol\n/react thumbsup\n"
    )
    done = releasegate("demo", "--dir", str(tmp_path / "demo"), stdin=script)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "approved by carol (1/1); queued" in done.stdout


def test_wait_at_the_prompt_without_any_worker_says_so(
    tmp_path: Path, policy_file: Path, redis_server: EmbeddedRedis, redis: Redis
) -> None:
    env = settings_env(policy_file, redis_server.url, tmp_path / "work")
    term = Terminal(["shell", "--as", "alice", "--channel", "deploy-int"], env, tmp_path)
    try:
        term.expect("alice@deploy-int> ")
        term.type("deploy awesome 2.1.0 to int\r")
        term.expect("queued")
        term.type("/wait\r")
        term.expect("no worker is running: start `releasegate worker`", timeout=30)
    finally:
        term.close()


def test_the_shell_completes_with_tab_suggests_what_was_meant_and_shows_usage(
    tmp_path: Path,
) -> None:
    demo = tmp_path / "demo"
    term = Terminal(["demo", "--dir", str(demo)], {}, tmp_path)
    try:
        term.expect("alice@deploy-int> ")
        term.type("sta\t")  # Tab: the command
        term.type("awe\t\r")  # Tab: the app
        term.expect("awesome: int 2.0.0")
        term.expect("alice@deploy-int> ")
        term.type("deplyo awesome 2.1.0 to int\r")
        term.expect("unknown command 'deplyo'; did you mean `deploy`?")
        term.type("/as\r")
        term.expect("usage: /as USER")
        term.type("/audit 5\r")
        term.expect("alice@deploy-int> ")
        term.type("/quit\r")
        assert term.wait() == 0
    finally:
        term.close()
    assert "Traceback" not in term.text


def test_tab_offers_commands_first_then_apps_and_environments_never_a_shell_command(
    conversation: Conversation, redis: Redis
) -> None:
    """Tab after `deploy awesome ` offered `/as`: past the first word it offers what the
    grammar takes there."""
    import io

    from bot.platforms.shell import ShellChat

    shell = ShellChat(conversation, redis, io.StringIO(), user="alice", channel="deploy-int")
    first = shell.completions("")
    assert "deploy" in first
    assert "/as" in first
    later = shell.completions("deploy awesome ")
    assert not [w for w in later if w.startswith("/")]
    assert {"awesome", "int", "prd", "to"} <= set(later)
    assert "alice" in shell.completions("/as ")
    assert "deploy-prd" in shell.completions("/in ")
