"""A world for the fault suite: its own durable Redis, a real remote, `releasegate worker`
processes that can be SIGKILLed, and the invariants that must hold after any fault.

Every fault test ends with `check_invariants`: no commit without its approvals, at most one
commit per request, every approved request ended and told exactly once, no secret in the
logs, the chat, the audit stream or the commits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from redis import Redis

from bot.conversation import Conversation
from bot.embedded_redis import EmbeddedRedis
from bot.events import Reply
from config.policy import parse_policy
from tests.conftest import Chat, Remote, eventually, git, outbox
from tests.test_lane import many_apps_remote
from tests.test_sweeper import kill_tree
from workers.git.mirrors import Mirrors
from workers.landing.commit import REQUEST_TRAILER
from workers.state.audit import AUDIT_STREAM
from workers.state.outbox import stream
from workers.state.request import RequestState
from workers.state.store import RequestStore

APPS = 6
APPROVERS = ("bob", "carol")
# Secrets an operator hands the processes; none may ever show anywhere people or logs see.
SECRETS = {
    "RELEASEGATE_SLACK_BOT_TOKEN": "xoxb-fault-suite-0000-secret",
    "RELEASEGATE_SLACK_SIGNING_SECRET": "fault-suite-signing-secret-0000",
}


def prd_policy(url: str, apps: int = APPS, validate: str | None = None) -> str:
    pins = "".join(
        f"  app{n}:\n    pins:\n      prd: [{{file: apps/app{n}/values-prd.yaml, "
        "yaml_path: image.tag}]\n"
        for n in range(apps)
    )
    return (
        f"repository:\n  url: {url}\n  branch: main\n"
        '  author: "releasegate <releasegate@demo.invalid>"\n'
        "environments:\n  prd:\n"
        '    channels: ["shell:deploy-prd"]\n    deployers: ["shell:alice"]\n'
        f"    approvers: [{', '.join(f'shell:{a}' for a in APPROVERS)}]\n"
        f"    approvals: {len(APPROVERS)}\n"
        # One deployer files every request of the suite; the limits per person have tests
        # of their own.
        "    max_open_requests: 1000\n    requests_per_minute: 1000\n"
        + (f"    validate: {validate!r}\n" if validate else "")
        + f"apps:\n{pins}"
    )


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redis_server = EmbeddedRedis(tmp / "redis", durable=True).start()
        self.redis = Redis.from_url(self.redis_server.url)
        remote = tmp / "prd.git"
        many_apps_remote(remote, tmp / "seed", APPS, env="prd")
        self.origin = Remote(remote)
        self.policy_file = tmp / "policy.yaml"
        self.set_policy()
        self.workers: list[subprocess.Popen[bytes]] = []
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self._chat: Chat | None = None

    def set_policy(self, validate: str | None = None) -> None:
        self.policy_file.write_text(prd_policy(self.origin.path.as_uri(), validate=validate))

    @property
    def chat(self) -> Chat:
        if self._chat is None:
            policy = parse_policy(self.policy_file.read_text())
            mirror = Mirrors.of(policy, self.tmp / "bot-work", freshness=0)
            self._chat = Chat(Conversation(policy, self.redis, mirror))
        return self._chat

    @property
    def store(self) -> RequestStore:
        return RequestStore(self.redis)

    def env(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")}
        return {
            **inherited,
            **SECRETS,
            "RELEASEGATE_POLICY": str(self.policy_file),
            "RELEASEGATE_REDIS_URL": self.redis_server.url,
            "RELEASEGATE_WORKDIR": str(self.tmp / "work"),
            # The crash suite's validator tells the test it is running through a file; the
            # sandbox that would hide that file from it has tests of its own.
            "RELEASEGATE_VALIDATE_SANDBOX": "none",
        }

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker-{len(self.workers)}.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(worker)
        return worker

    def kill_worker(self, worker: subprocess.Popen[bytes]) -> None:
        kill_tree(worker.pid)  # the worker, its scheduler, git, hooks
        worker.wait()

    def close(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                self.kill_worker(worker)
        self.redis.close()
        self.redis_server.stop()

    # What people do, retried the way a person retries after an error answer.
    def say(self, user: str, text: str, attempts: int = 60) -> Reply:
        for _ in range(attempts):
            reply = self.chat.say(user, "deploy-prd", text)
            if reply.ok or reply.reason:  # an answer, or a refusal by the rules
                return reply
            time.sleep(0.25)
        raise AssertionError(f"{text!r} never got an answer: {reply.text}")

    def request(self, app: int, version: str = "1.1.0") -> str:
        reply = self.say("alice", f"deploy app{app} {version} to prd")
        assert reply.request_id, reply.text
        return str(reply.request_id)

    def approve_all(self, request_id: str) -> None:
        for approver in APPROVERS:
            self.say(approver, f"approve {request_id}")

    def wait_ended(self, ids: Iterable[str], timeout: float = 90) -> None:
        ended = eventually(lambda: all(self.store.state(r).final for r in ids), timeout)
        open_ones = [r for r in ids if not self.store.state(r).final]
        assert ended, f"{', '.join(open_ones)} never ended: " + self.tail()

    def tail(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.logs.iterdir())

    def commits_by_request(self) -> dict[str, list[str]]:
        return commits_by_request(self.origin)


def commits_by_request(origin: Remote) -> dict[str, list[str]]:
    """Each request id's commits on the branch, each given as its message."""
    raw = git("log", "--format=%B%x00", "main", cwd=origin.path)
    found: dict[str, list[str]] = {}
    for message in raw.split("\0"):
        for line in message.splitlines():
            if line.startswith(f"{REQUEST_TRAILER}: "):
                found.setdefault(line.split(": ", 1)[1].strip(), []).append(message)
    return found


def check_invariants(world: World, ids: Iterable[str], expect: RequestState | None = None) -> None:
    """What must hold after any fault, for the requests people were told were approved."""
    ids = list(ids)
    store = world.store
    commits = world.commits_by_request()
    for request_id, messages in commits.items():
        assert len(messages) == 1, f"{request_id} was committed {len(messages)} times"
        approved_by = [line for line in messages[0].splitlines() if line.startswith("Approved-by")]
        assert sorted(approved_by) == [f"Approved-by: shell:{a}" for a in APPROVERS], messages[0]
    told = Counter(
        fields[b"request"].decode() for _id, fields in world.redis.xrange(stream("shell"))
    )
    for request_id in ids:
        state = store.state(request_id)
        assert state.final, f"{request_id} is still {state.value}"
        if expect is not None:
            assert state is expect, f"{request_id}: {state.value}, {store.result(request_id)}"
        landed = state is RequestState.PUSHED
        assert len(commits.get(request_id, [])) == (1 if landed else 0), request_id
        assert told[request_id] == 1, f"{request_id} was told {told[request_id]} times"
    seen = [
        world.tail(),
        *outbox(world.redis),
        *(m[0] for m in commits.values()),
        *(str(fields) for _id, fields in world.redis.xrange(AUDIT_STREAM)),
    ]
    for secret in SECRETS.values():
        assert not any(secret in text for text in seen), "a secret leaked"
