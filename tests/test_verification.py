"""Verification after the rollout: a real Prometheus measures the version the remote pins;
a bad one is rolled back by releasegate itself, once, byte-exact, and refused until cleared;
what cannot be measured locks the environment instead."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from redis import Redis

from bot.cards import Card, card_for
from bot.conversation import Conversation
from bot.embedded_redis import EmbeddedRedis
from bot.reports import OutboxConsumer
from config.policy import Policy, parse_policy
from config.settings import Settings
from config.verify import Metric
from tests.conftest import (
    Chat,
    Remote,
    eventually,
    git,
    plain_policy,
    run_worker,
    single_policy,
)
from tests.fake_argocd import TOKEN, FakeApp, FakeArgoCD, serve
from tests.prometheus import (
    QUERY,
    Exporter,
    Prometheus,
    pinned_versions,
    start_prometheus,
    wait_for_data,
)
from tests.test_cli import releasegate
from tests.test_sweeper import kill_tree
from workers.git.mirrors import Mirrors
from workers.rollout import follow as following
from workers.rollout import verify
from workers.rollout.measure import measure
from workers.rules.gates import Locks
from workers.state.outbox import stream
from workers.state.request import RequestState
from workers.state.store import RequestStore
from workers.state.verdicts import Failure, Verdicts

ANCHOR = "    approval_ttl: 2h\n"


class Recorder:
    """A chat that keeps what the bot posts, and the cards it edits."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.cards: list[str] = []

    def post(self, channel: str, thread: str | None, text: str) -> str:
        self.texts.append(text)
        return f"m{len(self.texts)}"

    def update_card(self, channel: str, ref: str, card: Card) -> None:
        self.cards.append(card.text())


def verify_block(
    url: str, *, count: int = 3, failure_limit: int = 0, on_failure: str = "rollback"
) -> str:
    return (
        "    verify:\n"
        f"      prometheus: {{url: '{url}'}}\n"
        "      metrics:\n"
        "        - name: error-rate\n"
        f"          query: '{QUERY}'\n"
        '          success: "< 0.05"\n'
        "          interval: 1s\n"
        f"          count: {count}\n"
        f"          failure_limit: {failure_limit}\n"
        "      inconclusive_limit: 2\n"
        f"      on_failure: {on_failure}\n"
    )


@dataclass
class World:
    chat: Chat
    policy: Policy
    policy_file: Path
    redis: Redis
    origin: Remote
    exporter: Exporter
    prometheus: Prometheus
    mirror: Mirrors
    recorder: Recorder = field(default_factory=lambda: Recorder())
    consumer: OutboxConsumer = field(init=False)

    def __post_init__(self) -> None:
        offer = self.chat.conversation.offer_rollback
        self.consumer = OutboxConsumer(self.redis, "shell", self.recorder, offer_rollback=offer)

    def deploy(self, version: str) -> str:
        """Deploy `version` to prd, approved by carol, landed by a worker."""
        request_id = self.chat.say(
            "alice", "deploy-prd", f"deploy awesome {version} to prd"
        ).request_id
        assert request_id is not None
        self.chat.say("carol", "deploy-prd", "approve")
        run_worker(self.redis)
        assert RequestStore(self.redis).state(request_id) is RequestState.PUSHED
        return request_id

    def verify_round(self) -> None:
        """One round of the workers' verifications loop."""
        verify.verify_round(self.redis, lambda: self.policy, None, self.mirror.snapshot)

    def verify_until_ended(self, request_id: str, seconds: float = 40) -> verify.VerificationRecord:
        """Run the workers' verifications loop, a round every few tenths of a second."""

        def ended() -> bool:
            self.verify_round()
            record = verify.load(self.redis, request_id)
            return record is not None and record.ended

        assert eventually(ended, seconds, every=0.3), verify.load(self.redis, request_id)
        record = verify.load(self.redis, request_id)
        assert record is not None
        return record

    def posted(self) -> list[str]:
        """Everything the bot has posted from the outbox so far (through its consumer)."""
        while self.consumer.run_once():
            pass
        return self.recorder.texts

    def told(self, phase: str) -> list[str]:
        return [
            f[b"request"].decode()
            for _id, f in self.redis.xrange(stream("shell"))
            if f.get(b"kind") == b"verification" and f.get(b"phase") == phase.encode()
        ]


@contextmanager
def verifying(
    tmp_path: Path,
    remote: Path,
    redis: Redis,
    policy_file: Path,
    block: Callable[[str], str] = verify_block,
    train: bool = False,
) -> Iterator[World]:
    """prd verifies with `block(prometheus_url)`, against a real Prometheus scraping an
    exporter whose error ratio follows the version the remote pins. With `train`, prd is
    promoted from int and a second app, `sidecar`, is pinned beside awesome."""
    exporter = Exporter(lambda: pinned_versions(remote))
    server = exporter.serve()
    prometheus = start_prometheus(tmp_path / "prometheus", f"127.0.0.1:{server.server_port}")
    try:
        text = single_policy(remote) + SIDECAR if train else plain_policy(remote)
        policy_file.write_text(text.replace(ANCHOR, ANCHOR + block(prometheus.url)))
        policy = parse_policy(policy_file.read_text())
        chat = Chat(Conversation(policy, redis, Mirrors.of(policy, tmp_path / "bot", freshness=0)))
        mirror = Mirrors.of(policy, tmp_path / "follower", freshness=0)
        wait_for_data(prometheus, QUERY.replace("{app}", "awesome").replace("{env}", "prd"))
        yield World(chat, policy, policy_file, redis, Remote(remote), exporter, prometheus, mirror)
    finally:
        prometheus.stop()
        server.shutdown()


@pytest.fixture
def world(
    tmp_path: Path, remote: Path, redis: Redis, settings: Settings, policy_file: Path
) -> Iterator[World]:
    with verifying(tmp_path, remote, redis, policy_file) as found:
        yield found


def test_a_good_version_ends_verified_with_no_rollback(world: World) -> None:
    request_id = world.deploy("2.1.0")
    count = world.origin.count()
    record = world.verify_until_ended(request_id)
    assert record.state == "verified"
    assert record.progress == (3, 3)
    assert not record.rollback
    assert not record.locked
    run_worker(world.redis)
    assert world.origin.count() == count
    # The outcome says the verification began at the push; its end is told once.
    told = world.posted()
    assert any(
        "🔬 verifying awesome 2.1.0 in prd: error-rate (< 0.05, 3 times every 1s)" in t
        for t in told
    )
    assert world.told("ended") == [request_id]
    [end] = [t for t in told if "verified in prd" in t]
    assert end.startswith(
        f"{request_id}: ✅ verified in prd: awesome error-rate: 0.01 (0 of 3 failed)"
    )
    assert world.redis.hget("releasegate:metrics:verifications", "prd|verified") == b"1"
    assert "✅ verified at " in card_for(RequestStore(world.redis), request_id).text()
    # status says it per app.
    assert "prd 2.1.0 (verified " in world.chat.say("bob", "deploy-prd", "status awesome").text


def test_a_bad_version_is_rolled_back_once_byte_exact_and_told_once_with_the_value(
    world: World,
) -> None:
    world.exporter.bad.add("awesome 2.3.0")
    request_id = world.deploy("2.3.0")
    base = RequestStore(world.redis).get(request_id).base_commit
    record = world.verify_until_ended(request_id)
    assert record.state == "failed"
    assert record.rollback
    rollback = RequestStore(world.redis).get(record.rollback)
    assert rollback.rollback_of == request_id
    assert rollback.approvals_needed == 0
    run_worker(world.redis)
    assert RequestStore(world.redis).state(record.rollback) is RequestState.PUSHED
    # Byte-exact: the whole tree is what it was before the deploy.
    assert git("diff", "--stat", base, "main", cwd=world.origin.path) == ""
    message = world.origin.message()
    assert f"Rollback-Of: {request_id}" in message
    # The first measurement may still see 2.0.0's samples (Prometheus scrapes every second).
    assert "Reason: verification failed: awesome error-rate: 0.3 ≥ 0.05 (1 of " in message
    assert "Requested-by: releasegate:verification" in message
    assert "Approved-by" not in message
    # One rollback: more rounds change nothing, and the end is told once, with the value and
    # the people who asked and approved.
    count = world.origin.count()
    for _ in range(3):
        world.verify_round()
    run_worker(world.redis)
    assert world.origin.count() == count
    assert world.told("ended") == [request_id]
    [end] = [t for t in world.posted() if "verification failed" in t]
    assert "0.3 ≥ 0.05" in end
    assert f"Rolling back at once: {record.rollback}" in end
    assert end.endswith("@alice @carol")
    assert world.redis.hget("releasegate:metrics:verifications", "prd|failed") == b"1"


def test_the_failed_version_is_refused_until_a_locker_clears_it(world: World) -> None:
    world.exporter.bad.add("awesome 2.3.0")
    request_id = world.deploy("2.3.0")
    world.verify_until_ended(request_id)
    run_worker(world.redis)  # the rollback
    again = world.chat.say("alice", "deploy-prd", "deploy awesome 2.3.0 to prd")
    assert not again.ok
    assert "awesome 2.3.0 failed verification in prd at " in again.text
    assert f"({request_id}): awesome error-rate: 0.3 ≥ 0.05" in again.text
    assert "`clear awesome 2.3.0 in prd`" in again.text
    assert (
        "⛔ awesome 2.3.0 failed verification"
        in world.chat.say("bob", "deploy-prd", "status prd").text
    )
    # Only a locker (prd's approvers) may clear it; then it may be asked for again.
    refused = world.chat.say("alice", "deploy-prd", "clear awesome 2.3.0 in prd")
    assert not refused.ok
    cleared = world.chat.say("carol", "deploy-prd", "clear awesome 2.3.0 in prd")
    assert cleared.ok
    assert "cleared in prd by carol" in cleared.text
    asked = world.chat.say("alice", "deploy-prd", "deploy awesome 2.3.0 to prd")
    assert asked.ok
    assert asked.request_id


def test_prometheus_stopped_mid_verification_is_inconclusive_locks_and_rolls_nothing_back(
    tmp_path: Path, remote: Path, redis: Redis, settings: Settings, policy_file: Path
) -> None:
    block = partial(verify_block, count=20)
    with verifying(tmp_path, remote, redis, policy_file, block) as world:
        request_id = world.deploy("2.1.0")

        def measured() -> bool:
            world.verify_round()
            record = verify.load(redis, request_id)
            return record is not None and record.progress[0] >= 1

        assert eventually(measured, 20, every=0.3)
        card = card_for(RequestStore(redis), request_id).text()
        assert re.search(r"🔬 verifying \d+/20: error-rate", card), card
        world.prometheus.stop()
        count = world.origin.count()
        record = world.verify_until_ended(request_id)
        assert record.state == "inconclusive"
        assert "Prometheus unreachable" in record.why()
        assert not record.rollback
        assert record.locked
        held = Locks(redis).get("prd")
        assert held is not None
        assert "inconclusive" in held.reason
        run_worker(redis)
        assert world.origin.count() == count
        refused = world.chat.say("alice", "deploy-prd", "deploy awesome 2.1.1 to prd")
        assert not refused.ok
        assert "prd is locked by releasegate" in refused.text


def test_hold_locks_the_environment_and_rolls_nothing_back(
    tmp_path: Path, remote: Path, redis: Redis, settings: Settings, policy_file: Path
) -> None:
    block = partial(verify_block, on_failure="hold")
    with verifying(tmp_path, remote, redis, policy_file, block) as world:
        world.exporter.bad.add("awesome 2.3.0")
        request_id = world.deploy("2.3.0")
        count = world.origin.count()
        record = world.verify_until_ended(request_id)
        assert record.state == "failed"
        assert not record.rollback
        assert record.locked
        run_worker(redis)
        assert world.origin.count() == count
        assert pinned_versions(remote)["awesome"] == "2.3.0"  # held, for a person to look at
        [end] = [t for t in world.posted() if "verification failed" in t]
        assert "prd is locked until someone looks" in end


def test_verification_starts_when_argo_cd_says_healthy_and_moves_the_soak_clock(
    tmp_path: Path, remote: Path, redis: Redis, settings: Settings, policy_file: Path
) -> None:
    rollout = '    rollout:\n      argocd: {application: "{app}-prd"}\n      timeout: 60s\n'

    def block(url: str) -> str:
        return rollout + verify_block(url)

    with verifying(tmp_path, remote, redis, policy_file, block) as world:
        argocd = FakeArgoCD()
        argocd.apps["awesome-prd"] = FakeApp("awesome-prd", remote, remote.as_uri())
        server = serve(argocd)
        try:
            request_id = world.deploy("2.1.0")
            assert verify.load(redis, request_id) is None  # not before the rollout is healthy
            url = f"http://127.0.0.1:{server.server_port}"

            def healthy() -> bool:
                following.follow_round(
                    redis, lambda: world.policy, url, TOKEN, world.mirror.is_ancestor_anywhere
                )
                return verify.load(redis, request_id) is not None

            assert eventually(healthy, 30, every=0.5)
        finally:
            server.shutdown()
        assert world.told("started") == [request_id]
        running = Verdicts(redis).running("prd", "awesome")
        assert running is not None
        assert (running.version, running.evidence) == ("2.1.0", "healthy")
        assert world.verify_until_ended(request_id).state == "verified"
        running = Verdicts(redis).running("prd", "awesome")
        assert running is not None
        assert running.evidence == "verified"
        posted = world.posted()
        assert any(t.startswith(f"{request_id}: 🔬 verifying awesome 2.1.0 in prd") for t in posted)


def test_a_worker_killed_mid_verification_leaves_one_rollback_told_once(
    tmp_path: Path,
    remote: Path,
    redis: Redis,
    settings: Settings,
    policy_file: Path,
    redis_server: EmbeddedRedis,
) -> None:
    block = partial(verify_block, count=8, failure_limit=3)
    with verifying(tmp_path, remote, redis, policy_file, block) as world:
        world.exporter.bad.add("awesome 2.3.0")
        request_id = world.deploy("2.3.0")
        count = world.origin.count()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")},
            "RELEASEGATE_POLICY": str(policy_file),
            "RELEASEGATE_REDIS_URL": redis_server.url,
        }

        def worker(name: str) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "worker"],
                env={**env, "RELEASEGATE_WORKDIR": str(tmp_path / name)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        def measured() -> bool:
            record = verify.load(redis, request_id)
            return record is not None and record.progress[0] >= 2

        first = worker("w1")
        assert eventually(measured, 60), "the worker never measured"
        kill_tree(first.pid)
        first.wait()
        second = worker("w2")
        try:

            def rolled_back() -> bool:
                record = verify.load(redis, request_id)
                return (
                    record is not None
                    and record.ended
                    and bool(record.rollback)
                    and RequestStore(redis).state(record.rollback) is RequestState.PUSHED
                )

            assert eventually(rolled_back, 90), verify.load(redis, request_id)
        finally:
            second.terminate()
            second.wait(timeout=30)
        assert world.origin.count() == count + 1
        assert f"Rollback-Of: {request_id}" in world.origin.message()
        assert world.told("ended") == [request_id]


def test_one_failing_app_of_a_train_rolls_the_whole_request_back(
    tmp_path: Path, remote: Path, redis: Redis, settings: Settings, policy_file: Path
) -> None:
    add_sidecar(tmp_path, remote)
    with verifying(tmp_path, remote, redis, policy_file, verify_block, train=True) as world:
        world.exporter.bad.add("sidecar 1.1.0")
        world.chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int")
        world.chat.say("alice", "deploy-int", "deploy sidecar 1.1.0 to int")
        run_worker(redis)
        request_id = world.chat.say("alice", "deploy-prd", "deploy production").request_id
        assert request_id is not None
        assert len(RequestStore(redis).get(request_id).changes) == 2
        world.chat.say("carol", "deploy-prd", "approve")
        run_worker(redis)
        base = RequestStore(redis).get(request_id).base_commit
        assert pinned_versions(remote) == {"awesome": "2.1.0", "sidecar": "1.1.0"}
        record = world.verify_until_ended(request_id)
        assert record.state == "failed"
        assert "sidecar error-rate: 0.3 ≥ 0.05" in record.why()
        run_worker(redis)
        assert git("diff", "--stat", base, "main", cwd=remote) == ""
        assert pinned_versions(remote) == {"awesome": "2.0.0", "sidecar": "1.0.0"}
        # Only the version that failed is refused; the train's other app may go again.
        verdicts = Verdicts(redis)
        assert verdicts.failure(world.policy, "prd", "sidecar", "1.1.0") is not None
        assert verdicts.failure(world.policy, "prd", "awesome", "2.1.0") is None
        rollback = RequestStore(redis).get(record.rollback)
        assert sorted(c.line() for c in rollback.changes) == [
            "awesome: 2.1.0 -> 2.0.0 (prd)",
            "sidecar: 1.1.0 -> 1.0.0 (prd)",
        ]


def add_sidecar(tmp_path: Path, remote: Path) -> None:
    """A second image in int and prd (at 1.0.0), for a release train of two apps."""
    work = tmp_path / "sidecar-edit"
    git("clone", "--quiet", str(remote), str(work))
    for env in ("int", "prd"):
        path = work / "env" / env / "kustomization.yml"
        text = path.read_text()
        anchor = "    newTag: 2.0.0\n"
        path.write_text(
            text.replace(anchor, anchor + "  - name: bespinian/sidecar\n    newTag: 1.0.0\n")
        )
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "sidecar", cwd=work)
    git("push", "--quiet", "origin", "main", cwd=work)


SIDECAR = """\
  sidecar:
    versions: semver
    pins:
      int:
        - {file: env/int/kustomization.yml, kustomize_image: bespinian/sidecar}
      prd:
        - {file: env/prd/kustomization.yml, kustomize_image: bespinian/sidecar}
"""


class Hostile(BaseHTTPRequestHandler):
    """A "Prometheus" that answers 50 MB, or a byte every half second."""

    mode = "huge"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        try:
            if self.mode == "huge":
                self.wfile.write(b'{"status":"success","data":{"result":[')
                chunk = b'{"metric":{},"value":[1,"0.01"]},' * 1000
                for _ in range(50 * 1024 * 1024 // len(chunk)):
                    self.wfile.write(chunk)
            else:
                for byte in b'{"status":"success","data":{"resultType":"scalar","result":[1,"0"]}}':
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.5)
        except (BrokenPipeError, ConnectionResetError):
            pass  # releasegate stopped reading: what it should do

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("mode", ["huge", "trickle"])
def test_a_50_mb_or_trickling_prometheus_answer_is_inconclusive_in_bounded_memory(
    mode: str,
) -> None:
    handler = type("Handler", (Hostile,), {"mode": mode})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    metric = Metric(name="error-rate", query="up", success="< 1", count=1)
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        tracemalloc.start()
        started = time.monotonic()
        found = measure(metric, "awesome", "prd", "2.1.0", url, None)
        took = time.monotonic() - started
        _now, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        server.shutdown()
    assert found.outcome == "inconclusive"
    assert found.said.startswith("Prometheus ")
    assert (
        "more than 1048576 bytes" in found.said
        if mode == "huge"
        else "longer than 5s" in found.said
    )
    assert peak < 8 * 1024 * 1024, peak  # read up to the 1 MiB cap, never the 50 MB
    assert took < 8


def test_check_config_asks_every_verification_query_once_and_names_a_refused_one(
    world: World, tmp_path: Path
) -> None:
    env = {
        "RELEASEGATE_POLICY": str(world.policy_file),
        "RELEASEGATE_WORKDIR": str(tmp_path / "cc"),
    }
    done = releasegate("check-config", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"verification in prd (Prometheus {world.prometheus.url}):" in done.stdout
    assert "error-rate           awesome              success: 0.01" in done.stdout
    broken = world.policy_file.read_text().replace('env="{env}"})', 'env="{env}"}')
    world.policy_file.write_text(broken)
    done = releasegate("check-config", env=env)
    assert done.returncode == 1
    assert "prd error-rate for awesome: Prometheus refused the query: " in done.stderr


def test_a_version_that_failed_upstream_is_refused_downstream_too(
    tmp_path: Path, remote: Path, redis: Redis, settings: Settings, policy_file: Path
) -> None:
    policy_file.write_text(single_policy(remote))
    policy = parse_policy(policy_file.read_text())
    chat = Chat(Conversation(policy, redis, Mirrors.of(policy, tmp_path / "bot", freshness=0)))
    chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int")
    run_worker(redis)
    why = "awesome error-rate: 0.3 ≥ 0.05 (1 of 1 failed)"
    Verdicts(redis).mark_failed(Failure("int", "awesome", "2.1.0", "RFAILED", time.time(), why))
    refused = chat.say("alice", "deploy-prd", "deploy production")
    assert not refused.ok
    assert "awesome 2.1.0 failed verification in int at " in refused.text
    assert "`clear awesome 2.1.0 in int`" in refused.text
