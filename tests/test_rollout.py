"""Following the rollout: after the push, the thread is told when Argo CD (or Flux) runs the
pushed commit Synced and Healthy, or that it degraded (with a rollback offered, never
applied), or did not get there in time, or could not be asked."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
from redis import Redis

from bot.cards import card_for
from bot.conversation import Conversation
from bot.embedded_redis import EmbeddedRedis
from bot.live import live_lines
from bot.platforms.slack_api import SlackPoster
from bot.platforms.slack_standin import FakeSlack
from bot.platforms.slack_standin import serve as serve_slack
from bot.telling import post_rollout
from config.errors import PostFailed
from config.policy import Policy, parse_policy
from config.settings import Settings
from tests.conftest import Chat, Remote, eventually, outbox, plain_policy, run_worker
from tests.fake_argocd import TOKEN, FakeApp, FakeArgoCD, FakeKubernetes, FakeKustomization, serve
from tests.test_cli import releasegate
from tests.test_sweeper import kill_tree
from workers.git.mirrors import Mirrors
from workers.rollout import follow as following
from workers.state.outbox import stream
from workers.state.request import Change, DeployRequest, RequestState
from workers.state.store import RequestStore

ARGOCD = """\
    rollout:
      argocd: {application: "{app}-prd", sync: true}
      timeout: 60s
"""
FLUX = """\
    rollout:
      flux: {kind: Kustomization, name: apps, namespace: flux-system, reconcile: true}
      timeout: 60s
"""


def with_rollout(remote: Path, block: str) -> str:
    text = plain_policy(remote)
    anchor = "    approval_ttl: 2h\n"
    assert anchor in text
    return text.replace(anchor, anchor + block)


@dataclass
class World:
    chat: Chat
    policy: Policy
    redis: Redis
    origin: Remote
    argocd: FakeArgoCD
    url: str
    mirror: Mirrors

    def push(self, version: str = "2.1.0") -> str:
        request_id = str(
            self.chat.say("alice", "deploy-prd", f"deploy awesome {version} to prd").request_id
        )
        self.chat.say("carol", "deploy-prd", "approve")
        run_worker(self.redis)
        assert RequestStore(self.redis).state(request_id) is RequestState.PUSHED
        return request_id

    def follow(self, token: str = TOKEN, rounds: int = 40) -> following.RolloutRecord:
        """Run the workers' rollouts loop, a look every POLL seconds of (simulated) time."""
        start = time.time()
        for n in range(rounds):
            following.follow_round(
                self.redis,
                lambda: self.policy,
                self.url,
                token,
                self.mirror.is_ancestor_anywhere,
                now=start + n * following.POLL,
            )
            if not self.redis.zcard(following.DUE):
                break
        [request_id] = [m.decode() for m in self.redis.smembers("releasegate:active")] or [
            self.last()
        ]
        record = following.load(self.redis, request_id)
        assert record is not None
        return record

    def last(self) -> str:
        *_, (_id, fields) = self.redis.xrange(stream("shell"))
        return str(fields[b"request"].decode())


def pushed_request(request_id: str, head: str, *changes: Change) -> DeployRequest:
    """A prd request as it stands once pushed at `head` (for following its rollout)."""
    return DeployRequest(
        id=request_id,
        verb="deploy" if len(changes) == 1 else "train",
        env="prd",
        requester="shell:alice",
        requester_name="alice",
        channel="shell:deploy-prd",
        approvals_needed=1,
        created_at=datetime.now(UTC),
        base_commit=head,
        diff="",
        changes=changes,
    )


@pytest.fixture
def world(
    tmp_path: Path, remote: Path, redis: Redis, settings: Settings, policy_file: Path
) -> Iterator[World]:
    policy_file.write_text(with_rollout(remote, ARGOCD))
    policy = parse_policy(policy_file.read_text())
    argocd = FakeArgoCD()
    argocd.apps["awesome-prd"] = FakeApp("awesome-prd", remote, remote.as_uri())
    server = serve(argocd)
    url = f"http://127.0.0.1:{server.server_port}"
    mirror = Mirrors.of(policy, tmp_path / "follower", freshness=0)
    chat = Chat(Conversation(policy, redis, Mirrors.of(policy, tmp_path / "bot", freshness=0)))
    yield World(chat, policy, redis, Remote(remote), argocd, url, mirror)
    server.shutdown()


def test_a_healthy_rollout_is_synced_and_told_with_the_sha_and_the_time_it_took(
    world: World,
) -> None:
    request_id = world.push()
    head = world.origin.head()
    record = world.follow()
    assert [t.state for t in record.targets] == ["healthy"]
    assert world.argocd.synced_with("awesome-prd") == [head]  # sync: true, with our commit
    told = [line for line in outbox(world.redis) if "healthy" in line]
    assert len(told) == 1
    assert told[0].startswith(f"{request_id}: {head[:7]} is synced and healthy in prd after ")
    assert told[0].endswith("(Argo CD: awesome-prd)")
    assert world.redis.hget("releasegate:metrics:rollouts", "prd|healthy") == b"1"


def test_a_degraded_rollout_is_told_at_once_and_a_rollback_is_offered_not_applied(
    world: World, tmp_path: Path
) -> None:
    world.argocd.apps["awesome-prd"].behaviour = "degraded"
    request_id = world.push()
    record = world.follow()
    assert [t.state for t in record.targets] == ["degraded"]
    assert "exceeded its progress deadline" in record.targets[0].last
    # The bot posts the news in the thread, then the rollback request as a card there.
    fake = FakeSlack()
    slack = serve_slack(fake)
    poster = SlackPoster("xoxb-test", f"http://127.0.0.1:{slack.server_port}/api/")
    store = RequestStore(world.redis)
    offer = world.chat.conversation.offer_rollback
    post_rollout(store, poster, request_id, offer)
    slack.shutdown()
    texts = fake.texts()
    assert texts[0].startswith(f"{request_id}: rollout of {world.origin.head()[:7]} in prd")
    assert 'awesome-prd: degraded: Deployment "awesome" exceeded' in texts[0]
    # Argo CD (up to 3.5) says why only on the resource: the thread and the card name it.
    assert "exceeded its progress deadline (Deployment/awesome)" in texts[0]
    card = card_for(store, request_id).text()
    assert '💔 degraded after the push: Deployment "awesome" exceeded its progress' in card
    [rollback_id] = store.pending_all()
    rollback = store.get(rollback_id)
    assert rollback.verb == "rollback"
    assert [c.line() for c in rollback.changes] == ["awesome: 2.1.0 -> 2.0.0 (prd)"]
    assert rollback.requester == "shell:alice"
    assert store.message_of(rollback_id) is not None  # reactions on its card approve it
    assert any(c.method == "chat.update" for c in fake.calls)  # the card, with its buttons
    count = world.origin.count()
    run_worker(world.redis)
    assert world.origin.count() == count  # offered, never applied on its own


def test_a_rollout_that_never_syncs_is_told_not_healthy_after_the_timeout(world: World) -> None:
    world.argocd.apps["awesome-prd"].behaviour = "never-syncs"
    request_id = world.push()
    record = world.follow()
    assert [t.state for t in record.targets] == ["timeout"]
    [told] = [line for line in outbox(world.redis) if "rollout of" in line]
    assert told.startswith(f"{request_id}: rollout of ")
    assert "awesome-prd: not healthy after 1m 00s: OutOfSync, Healthy at " in told


def test_a_wrong_token_is_one_clear_message_and_following_stops(world: World) -> None:
    world.push()
    record = world.follow(token="not-the-token")
    assert [t.state for t in record.targets] == ["error"]
    [told] = [line for line in outbox(world.redis) if "rollout of" in line]
    assert "awesome-prd: not followed: Argo CD refused releasegate's token" in told
    assert "HTTP 401: invalid session" in told
    assert not world.redis.zcard(following.DUE)


def test_status_of_an_environment_shows_what_argo_cd_says_now(
    world: World, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELEASEGATE_ARGOCD_URL", world.url)
    monkeypatch.setenv("RELEASEGATE_ARGOCD_TOKEN", TOKEN)
    world.argocd.apps["awesome-prd"].progressing = 0
    conversation = world.chat.conversation
    conversation.ctx.live = partial(live_lines, conversation, Settings())
    text = world.chat.say("bob", "deploy-prd", "status prd").text
    assert f"Argo CD awesome-prd: Synced, Healthy at {world.origin.head()[:7]}" in text


def test_check_config_says_per_application_whether_it_follows_this_repository(
    world: World, policy_file: Path, tmp_path: Path
) -> None:
    env = {
        "RELEASEGATE_POLICY": str(policy_file),
        "RELEASEGATE_WORKDIR": str(tmp_path / "cc"),
        "RELEASEGATE_ARGOCD_URL": world.url,
        "RELEASEGATE_ARGOCD_TOKEN": TOKEN,
    }
    done = releasegate("check-config", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "argocd awesome-prd" in done.stdout
    assert "ok: file://" in done.stdout
    world.argocd.apps["awesome-prd"].target_revision = "release"
    done = releasegate("check-config", env=env)
    assert done.returncode == 1
    assert "Argo CD application awesome-prd: follows release, not main" in done.stderr
    del world.argocd.apps["awesome-prd"]
    done = releasegate("check-config", env=env)
    assert "Argo CD has no application awesome-prd" in done.stderr


def test_following_survives_a_worker_killed_in_the_middle_and_is_told_once(
    world: World, tmp_path: Path, policy_file: Path, redis_server: EmbeddedRedis
) -> None:
    world.argocd.apps["awesome-prd"].behaviour = "healthy"
    world.argocd.apps["awesome-prd"].progressing = 10**6  # Progressing until we say so
    request_id = world.push()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")},
        "RELEASEGATE_POLICY": str(policy_file),
        "RELEASEGATE_REDIS_URL": redis_server.url,
        "RELEASEGATE_WORKDIR": str(tmp_path / "w"),
        "RELEASEGATE_ARGOCD_URL": world.url,
        "RELEASEGATE_ARGOCD_TOKEN": TOKEN,
    }

    def worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    first = worker()
    assert eventually(
        lambda: any(
            t.asked for t in getattr(following.load(world.redis, request_id), "targets", [])
        ),
        60,
        every=0.2,
    ), "the worker never looked at the rollout"
    kill_tree(first.pid)
    first.wait()
    world.argocd.apps["awesome-prd"].progressing = 0  # healthy from now on
    second = worker()
    try:

        def ended() -> bool:
            found = following.load(world.redis, request_id)
            return found is not None and found.ended

        assert eventually(ended, 90), "the next worker did not finish following"
    finally:
        second.terminate()
        second.wait(timeout=30)
    record = following.load(world.redis, request_id)
    assert record is not None
    assert [t.state for t in record.targets] == ["healthy"]
    kinds = [f.get(b"kind") for _id, f in world.redis.xrange(stream("shell"))]
    assert kinds.count(b"rollout") == 1


@contextmanager
def flux_world(
    tmp_path: Path,
    remote: Path,
    redis: Redis,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    kustomization: FakeKustomization,
) -> Iterator[World]:
    """The policy follows Flux; the Kubernetes API stand-in holds `kustomization`, reached
    through a KUBECONFIG with a token user."""
    policy_file.write_text(with_rollout(remote, FLUX))
    policy = parse_policy(policy_file.read_text())
    kube = FakeKubernetes()
    kube.kustomizations[kustomization.name] = kustomization
    server = serve(kube)
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{server.server_port}'}}}}]\n"
        f"users: [{{name: u, user: {{token: {kube.token}}}}}]\n"
        "contexts: [{name: test, context: {cluster: c, user: u}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    chat = Chat(Conversation(policy, redis, Mirrors.of(policy, tmp_path / "b", freshness=0)))
    follower = Mirrors.of(policy, tmp_path / "f", freshness=0)
    try:
        yield World(chat, policy, redis, Remote(remote), FakeArgoCD(), "", follower)
    finally:
        server.shutdown()
    assert kube.patches, "reconcile: true asks Flux to reconcile"


def test_flux_is_followed_through_the_kubernetes_api(
    tmp_path: Path,
    remote: Path,
    redis: Redis,
    settings: Settings,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apps = FakeKustomization("apps", remote)
    with flux_world(tmp_path, remote, redis, policy_file, monkeypatch, apps) as world:
        request_id = world.push()
        apps.applied = "0" * 40  # still on the old revision
        record = world.follow()
    assert [t.state for t in record.targets] == ["healthy"]
    told = [line for line in outbox(redis) if "healthy" in line]
    assert told == [told[0]]
    assert told[0].startswith(f"{request_id}: {world.origin.head()[:7]} is synced and healthy")
    assert told[0].endswith("(Flux: apps)")


def test_a_flux_rollout_that_is_not_ready_says_fluxs_reason(
    tmp_path: Path,
    remote: Path,
    redis: Redis,
    settings: Settings,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apps = FakeKustomization(
        "apps",
        remote,
        ready="False",
        message='Deployment/apps/awesome dry-run failed: field "spec.replicas" is invalid',
    )
    with flux_world(tmp_path, remote, redis, policy_file, monkeypatch, apps) as world:
        request_id = world.push()
        record = world.follow()
    assert [t.state for t in record.targets] == ["degraded"]
    assert "dry-run failed" in record.targets[0].last
    [told] = [line for line in outbox(redis) if line.startswith(f"{request_id}: rollout")]
    assert 'apps: degraded: Deployment/apps/awesome dry-run failed: field "spec.replicas"' in told


def test_a_degraded_rollout_where_nobody_approves_files_no_rollback_but_says_how(
    world: World, policy_file: Path, remote: Path
) -> None:
    """Filed where no approval is needed, a rollback would be queued at once: nobody would
    have decided to go back. The thread is told the command instead."""
    text = with_rollout(remote, ARGOCD).replace("    approvals: 1\n", "    approvals: 0\n")
    policy_file.write_text(text)  # the workers' policy too
    policy = parse_policy(text)
    world.policy = policy
    world.chat = Chat(Conversation(policy, world.redis, world.mirror))
    world.argocd.apps["awesome-prd"].behaviour = "degraded"
    request_id = str(
        world.chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    )
    run_worker(world.redis)
    world.follow()
    fake = FakeSlack()
    slack = serve_slack(fake)
    poster = SlackPoster("xoxb-test", f"http://127.0.0.1:{slack.server_port}/api/")
    store = RequestStore(world.redis)
    post_rollout(store, poster, request_id, world.chat.conversation.offer_rollback)
    slack.shutdown()
    assert fake.texts()[-1].startswith(
        "awesome is degraded; to go back, say `rollback awesome in prd`"
    )
    assert store.pending_all() == []
    assert store.active() == []


def test_each_app_of_a_release_train_is_followed_and_the_thread_gets_one_summary(
    world: World,
) -> None:

    head = world.origin.head()
    world.argocd.apps["web-prd"] = FakeApp("web-prd", world.origin.path, "x")
    world.argocd.apps["web-prd"].behaviour = "degraded"
    train = pushed_request(
        "RTRAIN2",
        head,
        Change(app="awesome", env="prd", old="2.0.0", new="2.1.0"),
        Change(app="web", env="prd", old="1.0.0", new="1.1.0"),
    )
    store = RequestStore(world.redis)
    store.create(train, RequestState.PUSHED)
    assert following.start(world.redis, world.policy, train, {"default": head}) is not None
    world.argocd.apps["awesome-prd"].progressing = 0
    world.argocd.apps["web-prd"].progressing = 0
    record = world.follow()
    assert {t.name: t.state for t in record.targets} == {
        "awesome-prd": "healthy",
        "web-prd": "degraded",
    }
    [told] = [line for line in outbox(world.redis) if line.startswith("RTRAIN2")]
    assert told.splitlines()[0] == f"RTRAIN2: rollout of {head[:7]} in prd (Argo CD):"
    assert told.splitlines()[1].startswith("awesome-prd: synced and healthy after ")
    assert told.splitlines()[2].startswith("web-prd: degraded: ")


def test_a_post_slack_refuses_midway_is_retried_without_telling_or_filing_twice(
    world: World,
) -> None:
    world.argocd.apps["awesome-prd"].behaviour = "degraded"
    request_id = world.push()
    world.follow()
    fake = FakeSlack()
    fake.refuse_text["Roll back awesome"] = 1  # the rollback's card, once
    slack = serve_slack(fake)
    poster = SlackPoster("xoxb-test", f"http://127.0.0.1:{slack.server_port}/api/")
    store = RequestStore(world.redis)
    offer = world.chat.conversation.offer_rollback
    with pytest.raises(PostFailed):
        post_rollout(store, poster, request_id, offer)
    post_rollout(store, poster, request_id, offer)  # the outbox's retry
    post_rollout(store, poster, request_id, offer)  # and a stray third delivery
    slack.shutdown()
    posted = [c.params["text"] for c in fake.calls if c.method == "chat.postMessage"]
    assert sum(text.startswith(f"{request_id}: rollout of") for text in posted) == 1
    assert sum("Roll back awesome" in text for text in posted) == 1
    assert len(store.pending_all()) == 1  # one rollback filed


def test_a_revision_of_a_few_characters_is_not_taken_for_the_pushed_commit(world: World) -> None:
    """Argo CD answering `5` (or any short string) as its revision names no commit."""
    world.argocd.apps["awesome-prd"].claimed_revision = "5"
    world.push()
    record = world.follow()
    assert [t.state for t in record.targets] == ["timeout"]
    assert not [line for line in outbox(world.redis) if "synced and healthy" in line]


@pytest.mark.parametrize(
    ("delivery", "words"),
    [("huge", "answered more than 1048576 bytes"), ("trickle", "took longer than 2s")],
)
def test_an_answer_too_large_or_too_slow_is_cut_and_said(
    world: World, monkeypatch: pytest.MonkeyPatch, delivery: str, words: str
) -> None:
    import workers.rollout.reconcilers

    monkeypatch.setattr(workers.rollout.reconcilers, "TIMEOUT", 2.0)
    world.argocd.apps["awesome-prd"].delivery = delivery  # type: ignore[assignment]
    world.push()
    started = time.monotonic()
    record = world.follow(rounds=1)
    assert time.monotonic() - started < 8  # bounded in all, not per read
    [target] = record.targets
    assert target.state == "following"
    assert words in target.last, target.last


def test_one_slow_application_does_not_delay_another(world: World) -> None:
    head = world.origin.head()
    world.argocd.apps["awesome-prd"].progressing = 0
    world.argocd.apps["web-prd"] = FakeApp("web-prd", world.origin.path, "x", delivery="late")
    store = RequestStore(world.redis)
    for request_id, app in (("RSLOW02", "web"), ("RFAST02", "awesome")):
        request = pushed_request(
            request_id, head, Change(app=app, env="prd", old="1.0.0", new="1.1.0")
        )
        store.create(request, RequestState.PUSHED)
        following.start(world.redis, world.policy, request, {"default": head})
    look = threading.Thread(
        target=following.follow_round,
        args=(
            world.redis,
            lambda: world.policy,
            world.url,
            TOKEN,
            world.mirror.is_ancestor_anywhere,
        ),
    )
    look.start()
    assert eventually(
        lambda: any(line.startswith("RFAST02") for line in outbox(world.redis)), 3, every=0.05
    ), "the fast application waited for the slow one"  # the slow answer takes 5 s
    assert look.is_alive()  # the slow one is still being asked
    look.join(timeout=15)


def test_the_healthy_news_links_the_application_in_argo_cd(world: World) -> None:
    from bot.telling import Links

    request_id = world.push()
    world.follow()
    fake = FakeSlack()
    slack = serve_slack(fake)
    poster = SlackPoster("xoxb-test", f"http://127.0.0.1:{slack.server_port}/api/")
    links = Links(application=lambda name: f"https://argocd.acme.example/applications/{name}")
    post_rollout(RequestStore(world.redis), poster, request_id, None, links)
    slack.shutdown()
    [news] = fake.texts()
    assert news.startswith(f"{request_id}: {world.origin.head()[:7]} is synced and healthy")
    assert news.endswith("\nhttps://argocd.acme.example/applications/awesome-prd")
