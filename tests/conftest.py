"""Real parts for every test: a Redis server started here, bare Git remotes on disk."""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn
from redis import Redis
from redis.exceptions import RedisError
from rq.serializers import JSONSerializer

from bot.conversation import Conversation
from bot.demo import create_remote, example
from bot.embedded_redis import EmbeddedRedis
from bot.events import ChatEvent, Reply
from config.policy import Policy, parse_policy
from config.settings import Settings
from workers.git.mirrors import Mirrors
from workers.horse import StayingWorker
from workers.state.queue import job_queue


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis(redis_server: EmbeddedRedis) -> Iterator[Redis]:
    client = Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare remote shaped like the seed's argocd-demo repository (int and prd at 2.0.0)."""
    path = tmp_path / "remote.git"
    create_remote(example("argocd-demo"), path, tmp_path / "seed")
    return path


class Remote:
    """Read a bare remote the way a reviewer would: log, files, diffs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def head(self) -> str:
        return git("rev-parse", "main", cwd=self.path).strip()

    def count(self) -> int:
        return int(git("rev-list", "--count", "main", cwd=self.path))

    def message(self, rev: str = "main") -> str:
        return git("log", "-1", "--format=%B", rev, cwd=self.path)

    def file(self, path: str, rev: str = "main") -> bytes:
        return subprocess.run(
            ["git", "show", f"{rev}:{path}"], cwd=self.path, check=True, capture_output=True
        ).stdout

    def diff(self, old: str, new: str = "main") -> str:
        return git("diff", "--unified=0", old, new, cwd=self.path)


@pytest.fixture
def origin(remote: Path) -> Remote:
    return Remote(remote)


TRAIN = "    promote_from: int\n    prereleases: false\n"


FIXTURES = Path(__file__).parent / "fixtures"


def single_policy(remote: Path) -> str:
    """The demo's policy with one repository, `remote` (the second has tests of its own)."""
    text = (FIXTURES / "single-repository.yaml").read_text(encoding="utf-8")
    return text.replace("url: REPOSITORY_URL", f"url: {remote.resolve().as_uri()}")


def plain_policy(remote: Path) -> str:
    """The single-repository policy without its release train: prd takes any version, as
    most tests want (the train has tests of its own)."""
    text = single_policy(remote)
    assert TRAIN in text, "the demo policy's release train changed; update TRAIN"
    return text.replace(TRAIN, "")


@pytest.fixture
def policy_file(tmp_path: Path, remote: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(plain_policy(remote), encoding="utf-8")
    return path


@pytest.fixture
def policy(policy_file: Path) -> Policy:
    return parse_policy(policy_file.read_text(), str(policy_file))


@pytest.fixture
def settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, policy_file: Path, redis_server: EmbeddedRedis
) -> Settings:
    """Settings as a worker process reads them from its environment."""
    monkeypatch.setenv("RELEASEGATE_POLICY", str(policy_file))
    monkeypatch.setenv("RELEASEGATE_REDIS_URL", redis_server.url)
    monkeypatch.setenv("RELEASEGATE_WORKDIR", str(tmp_path / "work"))
    # Validators run in the bubblewrap sandbox, as in production: show them this Python and
    # the tests' own tools folder (and nothing else of the test's files).
    monkeypatch.setenv("RELEASEGATE_VALIDATE_READONLY", sandbox_tools(tmp_path))
    return Settings()


def sandbox_tools(tmp_path: Path) -> str:
    """Read-only paths a sandboxed validator needs in tests: `tmp_path/tools`, where tests put
    validator scripts (keys and the work directory stay out of sight). Validators run the
    system's `python3`. Where the tests run as root the validator runs as `nobody`, so the
    folders down to `tools` are made passable (not readable) for others."""
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    for folder in [tools, *tools.parents]:
        if folder == Path(tempfile.gettempdir()) or folder == folder.parent:
            break
        folder.chmod(folder.stat().st_mode | 0o011)
    return str(tools)


@pytest.fixture
def conversation(policy: Policy, redis: Redis, settings: Settings) -> Conversation:
    checkout = Mirrors.of(policy, settings.workdir, freshness=0)
    return Conversation(policy, redis, checkout)


class Chat:
    """A person typing into the shell platform, through the real conversation."""

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation

    def say(self, user: str, channel: str, text: str, thread: str | None = None) -> Reply:
        event = ChatEvent(
            platform="shell", user=user, user_name=user, channel=channel, text=text, thread=thread
        )
        replies = self.conversation.handle(event)
        assert len(replies) == 1, replies
        return replies[0]

    def react(self, user: str, channel: str, emoji: str, request_id: str) -> list[Reply]:
        event = ChatEvent(platform="shell", user=user, user_name=user, channel=channel, text="")
        return self.conversation.react(event, emoji, request_id)


@pytest.fixture
def chat(conversation: Conversation) -> Chat:
    return Chat(conversation)


def run_worker(redis: Redis) -> None:
    """Run every queued job in the worker `releasegate worker` runs (jobs in its own process,
    heartbeats beside them), then return."""
    StayingWorker([job_queue(redis)], connection=redis, serializer=JSONSerializer).work(burst=True)


def eventually(check: Callable[[], object], seconds: float, every: float = 0.2) -> bool:
    """Whether `check()` comes true within `seconds` (Redis errors meanwhile are retried):
    the one way tests wait for something another process or thread does."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return True
        except RedisError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(every)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """End a server the test started: politely, then for good after ten seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serving(
    process: subprocess.Popen[bytes],
    url: str,
    log: Path,
    seconds: float,
    answers: tuple[int, ...] = (200,),
) -> None:
    """Wait until a server the test started answers `url` with one of `answers`; stops it and
    raises with the tail of its log when it exits first or never answers."""

    def up() -> bool:
        if process.poll() is not None:
            return True  # said below
        try:
            return requests.get(url, timeout=1).status_code in answers
        except requests.RequestException:
            return False

    if not eventually(up, seconds, every=0.05) or process.poll() is not None:
        stop_server(process)
        raise AssertionError(log.read_text(errors="replace")[-2000:])


def outbox(redis: Redis) -> list[str]:
    """What the workers queued for the shell's channels, as the thread is told it (by the
    bot's own teller, reading only: nothing is marked told)."""
    from bot.telling import Teller
    from workers.state.outbox import stream
    from workers.state.store import RequestStore

    class Said:
        def __init__(self) -> None:
            self.texts: list[str] = []

        def post(self, channel: str, thread: str | None, text: str) -> str:
            self.texts.append(text)
            return str(len(self.texts))

        def update_card(self, channel: str, ref: str, card: object) -> None:
            pass

    said = Said()
    teller = Teller(RequestStore(redis), said, read_only=True)
    for _id, fields in redis.xrange(stream("shell")):
        teller.tell({k.decode(): v.decode() for k, v in fields.items()})
    return said.texts


@contextmanager
def http_server(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port; yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert eventually(lambda: server.started, 10, every=0.01), "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
