"""The Redis master SIGKILLed during approvals and pushes, with Sentinel, two bot replicas
and two workers: every approval a person was told about still counts after the failover,
nothing lands without its approvals or twice, and every request ends and is told once.
Real servers: three Redis data nodes, three sentinels, real worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from bot.conversation import Conversation
from bot.events import Reply
from config.policy import parse_policy
from config.settings import Settings
from tests.conftest import Chat, Remote, git
from tests.faults.world import APPROVERS, prd_policy
from tests.sentinel import SentinelWorld
from tests.test_lane import many_apps_remote
from tests.test_sweeper import kill_tree
from workers.git.mirrors import Mirrors
from workers.state.connection import connect
from workers.state.outbox import stream
from workers.state.request import RequestState
from workers.state.store import RequestStore

APPS = 6


def definite(chat: Chat, user: str, text: str) -> Reply:
    """Say `text` until the answer is one a person can act on: done, or refused by the rules.
    "Cannot reach Redis" and "may not have been recorded" are said again, as a person would."""
    deadline = time.monotonic() + 60
    while True:
        reply = chat.say(user, "deploy-prd", text)
        if reply.ok or reply.reason:
            return reply
        assert time.monotonic() < deadline, f"{text!r} never got through: {reply.text}"
        time.sleep(0.3)


def test_a_master_killed_during_approvals_and_pushes_loses_no_confirmed_approval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sentinels = SentinelWorld(tmp_path / "redis")
    sentinels.folder.mkdir()
    sentinels.start(replicas=2)
    remote = tmp_path / "prd.git"
    many_apps_remote(remote, tmp_path / "seed", APPS, env="prd")
    origin = Remote(remote)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(prd_policy(remote.as_uri(), APPS))
    env = {
        "RELEASEGATE_REDIS_URL": "redis://ignored.invalid:1/0",
        "RELEASEGATE_REDIS_SENTINELS": sentinels.sentinels,
        "RELEASEGATE_POLICY": str(policy_file),
        "RELEASEGATE_WORKDIR": str(tmp_path / "work"),
        "RELEASEGATE_VALIDATE_SANDBOX": "none",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    policy = parse_policy(policy_file.read_text())
    replicas = [
        Chat(Conversation(policy, connect(settings), Mirrors.of(policy, tmp_path / f"bot{n}")))
        for n in range(2)
    ]
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker"],
            env={**inherited, **env},
            stdout=(tmp_path / f"worker-{n}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for n in range(2)
    ]
    failed_over = threading.Event()
    try:
        ids = []
        for n in range(APPS):
            chat = replicas[n % 2]
            asked = definite(chat, "alice", f"deploy app{n} 1.1.0 to prd")
            assert asked.request_id, asked.text
            ids.append(str(asked.request_id))
            for i, approver in enumerate(APPROVERS):
                if n == 2 and i == 1:  # between two approvals of one request, pushes running
                    old = sentinels.master_port()
                    sentinels.kill(old)

                    def promoted(old: int = old) -> None:
                        sentinels.wait_for_failover(old)
                        failed_over.set()

                    threading.Thread(target=promoted, daemon=True).start()
                reply = definite(replicas[(n + i) % 2], approver, f"approve {ids[-1]}")
                # Confirmed, or counted already (a retry after an answer that got lost).
                assert reply.ok or reply.reason in ("duplicate", "not_pending"), reply.text
        assert failed_over.wait(60), "the sentinels never promoted a replica"
        store = RequestStore(connect(settings))
        deadline = time.monotonic() + 120
        while not all(store.state(r).final for r in ids):
            logs = "\n".join(p.read_text()[-1500:] for p in tmp_path.glob("worker-*.log"))
            assert time.monotonic() < deadline, logs
            time.sleep(0.3)
        assert [store.state(r) for r in ids] == [RequestState.PUSHED] * APPS
        told = Counter(f[b"request"].decode() for _i, f in store.redis.xrange(stream("shell")))
        assert [told[r] for r in ids] == [1] * APPS  # every request told once
    finally:
        for worker in workers:
            kill_tree(worker.pid)
            worker.wait()
        sentinels.stop()
    raw = git("log", "--format=%B%x00", "main", cwd=origin.path)
    commits = Counter(
        line.split(": ", 1)[1]
        for message in raw.split("\0")
        for line in message.splitlines()
        if line.startswith("Releasegate-Request: ")
    )
    assert sorted(commits) == sorted(ids), commits  # each landed, none without being asked
    assert set(commits.values()) == {1}  # and once
    for message in raw.split("\0"):
        if "Releasegate-Request: " in message:
            approved = sorted(
                line for line in message.splitlines() if line.startswith("Approved-by")
            )
            assert approved == [f"Approved-by: shell:{a}" for a in APPROVERS], message
