"""Two bot replicas on one Redis: the Rocket.Chat poller runs on one at a time, and when
that replica is killed the other takes over; every message is answered exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis

from bot.embedded_redis import EmbeddedRedis, free_port
from tests.conftest import eventually
from tests.fake_rocketchat import BOT_ID, FakeRocketChat, serve
from tests.test_rocketchat import RC_POLICY
from tests.test_sweeper import kill_tree


def start_replica(
    env: dict[str, str], tmp_path: Path, n: int
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    replica_env = {
        **env,
        "RELEASEGATE_HTTP_PORT": str(port),
        "RELEASEGATE_WORKDIR": str(tmp_path / f"work-{n}"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve"],
        env=replica_env,
        stdout=(tmp_path / f"replica-{n}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    return process, f"http://127.0.0.1:{port}"


def leads(url: str) -> list[str] | None:
    try:
        ready = httpx.get(f"{url}/readyz", timeout=2)
    except httpx.HTTPError:
        return None
    return list(ready.json().get("leads", [])) if ready.status_code == 200 else None


def wait(check: Callable[[], bool], seconds: float, what: str, logs: Path) -> None:
    if not eventually(check, seconds, every=0.1):
        said = "\n".join(p.read_text()[-1500:] for p in logs.glob("replica-*.log"))
        raise AssertionError(f"{what}\n{said}")


@pytest.fixture
def replicas(
    tmp_path: Path, remote: Path, redis_server: EmbeddedRedis
) -> Iterator[tuple[FakeRocketChat, list[tuple[subprocess.Popen[bytes], str]]]]:
    fake = FakeRocketChat()
    api = serve(fake)
    for name in ("alice", "bob", "carol", "dave"):
        fake.id_of(name)
    policy = tmp_path / "policy.yaml"
    policy.write_text(RC_POLICY.format(url=remote.as_uri()))
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")}
    env = {
        **inherited,
        "RELEASEGATE_POLICY": str(policy),
        "RELEASEGATE_REDIS_URL": redis_server.url,
        "RELEASEGATE_ROCKETCHAT_URL": f"http://127.0.0.1:{api.server_port}",
        "RELEASEGATE_ROCKETCHAT_USER_ID": BOT_ID,
        "RELEASEGATE_ROCKETCHAT_TOKEN": "rc-token",
    }
    started = [start_replica(env, tmp_path, n) for n in range(2)]
    try:
        yield fake, started
    finally:
        for process, _url in started:
            if process.poll() is None:
                kill_tree(process.pid)
                process.wait()
        api.shutdown()


def test_one_replica_polls_and_the_other_takes_over_when_it_is_killed(
    replicas: tuple[FakeRocketChat, list[tuple[subprocess.Popen[bytes], str]]],
    tmp_path: Path,
    redis: Redis,
) -> None:
    fake, started = replicas

    def holders() -> list[int]:
        return [
            n for n, (_p, url) in enumerate(started) if "rocketchat-poller" in (leads(url) or [])
        ]

    wait(lambda: all(leads(url) is not None for _p, url in started), 60, "not ready", tmp_path)
    wait(lambda: len(holders()) == 1, 20, "no replica took the poller", tmp_path)
    [holder] = holders()
    assert len(holders()) == 1  # still one: the other waits
    cursor = "releasegate:rocketchat:cursor:rocketchat:deploy-int"
    wait(lambda: bool(redis.exists(cursor)), 20, "the poller's first round set no cursor", tmp_path)
    for _ in range(3):
        fake.say("bob", "deploy-int", "status int")
    fake.wait_for_posts(3, timeout=20)
    process, _url = started[holder]
    kill_tree(process.pid)
    process.wait()
    for _ in range(3):  # said while nobody polls: read by the replica that takes over
        fake.say("bob", "deploy-int", "status int")
    other = 1 - holder
    wait(lambda: holders() == [other], 20, "the other replica did not take over", tmp_path)
    answers = fake.wait_for_posts(6, timeout=30)
    time.sleep(2)  # a message handled twice would show up meanwhile
    answers = fake.posted()
    assert len(answers) == 6, [a["msg"][:40] for a in answers]
    assert all(a["msg"].startswith("awesome: int 2.0.0") for a in answers)
