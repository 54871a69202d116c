"""The Redis master SIGKILLed during approvals and pushes, with Sentinel, two `releasegate
serve` replicas behind Slack's front door and two workers: every approval a person was told
about still counts after the failover, nothing lands without its approvals or twice, and
every request ends and is told once. Real servers: three Redis data nodes, three sentinels,
real bot and worker processes, signed HTTP deliveries, a Slack API stand-in."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import RedisError

from bot.cards import Card
from bot.conversation import Conversation
from bot.platforms.slack_standin import FakeSlack, serve
from bot.reports import OutboxConsumer
from config.policy import parse_policy
from config.settings import Settings
from tests.conftest import Chat, Remote, eventually
from tests.faults.world import commits_by_request
from tests.sentinel import SentinelWorld
from tests.slack_sender import SECRET, SlackSender
from tests.test_lane import many_apps_remote
from tests.test_replicas import leads, start_replica
from tests.test_sweeper import kill_tree
from workers.git.mirrors import Mirrors
from workers.state.connection import connect
from workers.state.outbox import stream
from workers.state.request import RequestState
from workers.state.store import RequestStore

APPS = 6
APPROVERS = ("UCAROL", "UDAVE")
# Answers a person meets during a failover, and retries after.
TRY_AGAIN = ("cannot reach its Redis", "may not have been recorded", "is busy right now")


def slack_prd_policy(url: str) -> str:
    pins = "".join(
        f"  app{n}:\n    pins:\n      prd: [{{file: apps/app{n}/values-prd.yaml, "
        "yaml_path: image.tag}]\n"
        for n in range(APPS)
    )
    return (
        f"repository:\n  url: {url}\n  branch: main\n"
        '  author: "releasegate <releasegate@demo.invalid>"\n'
        "environments:\n  prd:\n"
        '    channels: ["slack:CPRD"]\n    deployers: ["slack:UALICE"]\n'
        f"    approvers: [{', '.join(f'slack:{a}' for a in APPROVERS)}]\n"
        f"    approvals: {len(APPROVERS)}\n"
        "    max_open_requests: 1000\n    requests_per_minute: 1000\n"
        f"apps:\n{pins}"
    )


class Person:
    """Somebody in #prd, whose every action is answered through the Slack stand-in: they act
    again after an answer that says to try again, as a person would."""

    def __init__(self, fake: FakeSlack, replicas: list[SlackSender], user: str) -> None:
        self.fake = fake
        self.replicas = replicas
        self.user = user

    def answer(self, seen: int, mine: Callable[[str, dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for call in self.fake.calls[seen:]:
                if call.method == "chat.postEphemeral" and call.params.get("user") == self.user:
                    return call.params
                if mine(call.method, call.params):
                    return call.params
            time.sleep(0.05)
        raise AssertionError(f"{self.user} was never answered")

    def act(
        self, send: Callable[[SlackSender], object], mine: Callable[[str, dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """Send through one replica, then the other, until an answer one can act on."""
        deadline = time.monotonic() + 90
        attempt = 0
        while True:
            seen = len(self.fake.calls)
            send(self.replicas[attempt % 2])
            answer = self.answer(seen, mine)
            text = str(answer.get("text", ""))
            if not any(words in text for words in TRY_AGAIN):
                return answer
            assert time.monotonic() < deadline, f"never got through: {text}"
            attempt += 1
            time.sleep(0.3)


def card_of(app: str) -> Callable[[str, dict[str, Any]], bool]:
    return lambda method, params: (
        method == "chat.postMessage"
        and bool(params.get("blocks") and f"{app} " in str(params.get("text", "")))
    )


def approval_of(request_id: str) -> Callable[[str, dict[str, Any]], bool]:
    said = re.compile(rf"^{request_id}(:? approval \d/\d| approved) by ")
    return lambda method, params: (
        method == "chat.postMessage" and bool(said.match(str(params.get("text", ""))))
    )


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelWorld]:
    world = SentinelWorld(tmp_path / "redis")
    world.folder.mkdir()
    yield world.start(replicas=2)
    world.stop()


def test_a_master_killed_during_approvals_and_pushes_through_two_bot_replicas_loses_nothing(
    sentinels: SentinelWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = tmp_path / "prd.git"
    many_apps_remote(remote, tmp_path / "seed", APPS, env="prd")
    origin = Remote(remote)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(slack_prd_policy(remote.as_uri()))
    fake = FakeSlack()
    api = serve(fake)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")}
    env = {
        **inherited,
        "RELEASEGATE_REDIS_URL": "redis://ignored.invalid:1/0",
        # The test's sentinels and nodes run without a data password, on loopback.
        "RELEASEGATE_REDIS_WITHOUT_PASSWORD": "true",
        "RELEASEGATE_REDIS_SENTINELS": sentinels.sentinels,
        "RELEASEGATE_POLICY": str(policy_file),
        "RELEASEGATE_VALIDATE_SANDBOX": "none",
        "RELEASEGATE_SLACK_BOT_TOKEN": "xoxb-test-token",
        "RELEASEGATE_SLACK_SIGNING_SECRET": SECRET,
        "RELEASEGATE_SLACK_API_URL": f"http://127.0.0.1:{api.server_port}/api/",
    }
    bots = [start_replica(env, tmp_path, n) for n in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker"],
            env={**env, "RELEASEGATE_WORKDIR": str(tmp_path / f"worker-work-{n}")},
            stdout=(tmp_path / f"worker-{n}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for n in range(2)
    ]
    replicas = [SlackSender(url) for _process, url in bots]

    def logs() -> str:
        return "\n".join(p.read_text()[-2000:] for p in tmp_path.glob("*.log"))

    failed_over = threading.Event()
    confirmed: set[tuple[str, str]] = set()  # approvals a person was told were counted
    try:
        assert eventually(lambda: all(leads(url) is not None for _p, url in bots), 60, every=0.2), (
            "the replicas never got ready\n" + logs()
        )
        # Slack delivers the first command to both replicas: one request, one card.
        seen = len(fake.calls)
        for replica in replicas:
            replica.command("UALICE", "CPRD", "app0 1.1.0 to prd", trigger="T-BOTH")
        ids = [_request_id(Person(fake, replicas, "UALICE").answer(seen, card_of("app0")))]
        for n in range(1, APPS):
            alice = Person(fake, replicas[::-1] if n % 2 else replicas, "UALICE")
            card = alice.act(
                lambda r, n=n: r.command("UALICE", "CPRD", f"app{n} 1.1.0 to prd"),
                card_of(f"app{n}"),
            )
            ids.append(_request_id(card))
        for n, request_id in enumerate(ids):
            for i, user in enumerate(APPROVERS):
                if n == 2 and i == 1:  # between two approvals of one request, pushes running
                    old = sentinels.master_port()
                    sentinels.kill(old)

                    def promoted(old: int = old) -> None:
                        sentinels.wait_for_failover(old)
                        failed_over.set()

                    threading.Thread(target=promoted, daemon=True).start()
                # Filed through one replica, approved first through the other.
                person = Person(fake, replicas if (n + i) % 2 else replicas[::-1], user)
                answer = person.act(
                    lambda r, user=user, request_id=request_id: r.command(
                        user, "CPRD", f"approve {request_id}"
                    ),
                    approval_of(request_id),
                )
                if approval_of(request_id)("chat.postMessage", answer):
                    confirmed.add((request_id, user))
                else:  # counted already: an answer that got lost the first time
                    assert "already approved" in answer["text"], answer["text"]
        assert failed_over.wait(60), "the sentinels never promoted a replica"
        for name in ("RELEASEGATE_REDIS_URL", "RELEASEGATE_REDIS_SENTINELS"):
            monkeypatch.setenv(name, env[name])
        store = RequestStore(connect(Settings()))
        assert eventually(lambda: all(store.state(r).final for r in ids), 120, every=0.3), logs()
        assert [store.state(r) for r in ids] == [RequestState.PUSHED] * APPS
        told: Counter[str] = Counter()
        deadline = time.monotonic() + 30
        while sorted(told) != sorted(ids):
            assert time.monotonic() < deadline, f"not every request was told: {told}\n{logs()}"
            time.sleep(0.2)
            told = Counter(
                text.split(":", 1)[0]
                for p in fake.called("chat.postMessage")
                if re.match(r"^R[0-9A-Z]{6}: pushed ", text := str(p.get("text", "")))
            )
        time.sleep(1)  # a second telling would show up meanwhile
    finally:
        for process in [*workers, *(p for p, _url in bots)]:
            kill_tree(process.pid)
            process.wait()
        api.shutdown()
    told = Counter(
        text.split(":", 1)[0]
        for p in fake.called("chat.postMessage")
        if re.match(r"^R[0-9A-Z]{6}: pushed ", text := str(p.get("text", "")))
    )
    assert told == Counter({r: 1 for r in ids}), told  # every request told, and once
    cards = [p for p in fake.called("chat.postMessage") if p.get("blocks")]
    assert len(cards) == APPS  # the command Slack delivered twice made one card
    commits = commits_by_request(origin)
    assert sorted(commits) == sorted(ids), commits  # each landed, none without being asked
    assert all(len(messages) == 1 for messages in commits.values())  # and once
    carried = {
        (request_id, line.removeprefix("Approved-by: slack:"))
        for request_id, [message] in commits.items()
        for line in message.splitlines()
        if line.startswith("Approved-by: ")
    }
    assert carried == {(r, a) for r in ids for a in APPROVERS}  # nothing landed unapproved
    assert confirmed <= carried  # every approval a person was told of still counted


def _request_id(card: dict[str, Any]) -> str:
    match = re.search(r"\((R[0-9A-Z]{6})\)", str(card["blocks"][0]["text"]["text"]))
    assert match is not None, card
    return match.group(1)


class RecordedThread:
    """A chat platform that keeps what the bot posted in a request's thread."""

    def __init__(self) -> None:
        self.posts: list[str] = []

    def post(self, channel: str, thread: str | None, text: str) -> str:
        self.posts.append(text)
        return f"{len(self.posts)}"

    def update_card(self, channel: str, ref: str, card: Card) -> None:
        pass


def test_a_push_only_the_lost_master_knew_of_is_found_again_and_told_once(
    sentinels: SentinelWorld,
    origin: Remote,
    policy_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker pushes while the replicas lag, and the master dies before they hear of it:
    the new master still has the request running. The worker's sweeper finds it again, the
    commit trailer keeps it from a second commit, and the thread hears of it once: the bot
    never posted the news only the lost master held."""
    env = {
        "RELEASEGATE_REDIS_URL": "redis://ignored.invalid:1/0",
        # The test's sentinels and nodes run without a data password, on loopback.
        "RELEASEGATE_REDIS_WITHOUT_PASSWORD": "true",
        "RELEASEGATE_REDIS_SENTINELS": sentinels.sentinels,
        "RELEASEGATE_POLICY": str(policy_file),
        "RELEASEGATE_WORKDIR": str(tmp_path / "work"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    redis = connect(Settings())
    policy = parse_policy(policy_file.read_text())
    chat = Chat(Conversation(policy, redis, Mirrors.of(policy, tmp_path / "bot", freshness=0)))
    request_id = str(chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id)
    assert chat.say("carol", "deploy-prd", f"approve {request_id}").ok  # on a replica: WAIT
    inside, release = tmp_path / "in-hook", tmp_path / "release"
    hook = origin.path / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\ntouch {inside}\nwhile [ ! -e {release} ]; do sleep 0.05; done\n")
    hook.chmod(0o755)
    thread = RecordedThread()
    bot = OutboxConsumer(redis, "shell", thread)
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            try:
                bot.run_once(block_ms=100)
            except RedisError:
                time.sleep(0.1)  # the master is switching

    inherited = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "worker"],
        env={**inherited, **env, "PYTHONUNBUFFERED": "1"},
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    try:
        assert eventually(lambda: inside.exists(), 30, every=0.05), (
            tmp_path / "worker.log"
        ).read_text()
        old = sentinels.master_port()
        lagging = [p for p in sentinels.data_ports if p != old]
        for port in lagging:  # frozen, and cut off: what the master writes now only it has
            sentinels.processes[port].send_signal(signal.SIGSTOP)
        sentinels.client(old).client_kill_filter(_type="replica")
        release.touch()
        on_old = RequestStore(sentinels.client(old))
        assert eventually(
            lambda: on_old.state(request_id) is RequestState.PUSHED, 30, every=0.05
        ), (tmp_path / "worker.log").read_text()
        assert sentinels.client(old).xlen(stream("shell")) == 1
        # The bot has the news, but no replica does: it holds it back.
        assert eventually(lambda: bot.holding, 10, every=0.05)
        assert thread.posts == []
        sentinels.kill(old)
        for port in lagging:
            sentinels.processes[port].send_signal(signal.SIGCONT)
        sentinels.wait_for_failover(old)
        store = RequestStore(redis)
        assert eventually(lambda: thread.posts, 60, every=0.2), (
            tmp_path / "worker.log"
        ).read_text()[-3000:]
        time.sleep(1.5)  # a second telling would show up meanwhile
    finally:
        stop.set()
        consumer.join(5)
        kill_tree(worker.pid)
        worker.wait()
    assert store.state(request_id) is RequestState.PUSHED
    assert [p.split(" ", 2)[:2] for p in thread.posts] == [[f"{request_id}:", "pushed"]]
    assert list(commits_by_request(origin)) == [request_id]
    assert len(commits_by_request(origin)[request_id]) == 1  # found, not committed again
