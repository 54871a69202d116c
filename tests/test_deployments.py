"""Deployment records on the app's source repository: GitHub Deployments and their statuses,
GitLab deployments, in order, for deploys, failures, rollbacks and supersessions, through a
stand-in that answers as their REST APIs do; a forge that refuses never fails a deploy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from redis import Redis

from bot.conversation import Conversation
from bot.demo import create_source
from config.policy import Policy, parse_policy
from config.settings import Settings
from tests.conftest import Chat, eventually, git, plain_policy, run_worker
from tests.fake_ci import FakeCI
from tests.registry import start_registry
from tests.test_checks import IMAGE
from workers import jobs
from workers.git.mirrors import Mirrors
from workers.records import deployments
from workers.rollout import verify
from workers.state.request import RequestState
from workers.state.store import RequestStore

ANCHOR = "    approval_ttl: 2h\n"


class Health(BaseHTTPRequestHandler):
    """The app's health check: 500 while `broken`."""

    broken = False

    def do_GET(self) -> None:
        self.send_response(500 if Health.broken else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class World:
    chat: Chat
    policy: Policy
    redis: Redis
    forge: FakeCI
    source: Path
    mirror: Mirrors

    def deploy(self, version: str) -> str:
        request_id = self.chat.say(
            "alice", "deploy-prd", f"deploy awesome {version} to prd"
        ).request_id
        assert request_id is not None
        self.chat.say("carol", "deploy-prd", "approve")
        run_worker(self.redis)  # the deploy, then its records
        return request_id

    def tag(self, version: str) -> str:
        return git("rev-parse", f"{version}^{{commit}}", cwd=self.source).strip()

    def verify_all(self) -> None:
        ended = partial(deployments.note, self.redis)

        def done() -> bool:
            verify.verify_round(
                self.redis, lambda: self.policy, None, self.mirror.snapshot, ended=ended
            )
            return not self.redis.zcard(verify.DUE)

        assert eventually(done, 30, every=0.3)
        run_worker(self.redis)


def world_for(
    tmp_path: Path, remote: Path, redis: Redis, policy_file: Path, kind: str, verify_url: str = ""
) -> World:
    forge = FakeCI()
    source = tmp_path / "awesome.git"
    create_source(source, tmp_path / "scratch")
    api = f"http://{forge.host}/api/v3" if kind == "github" else f"http://{forge.host}/api/v4"
    text = plain_policy(remote)
    branch = "  branch: main\n"
    assert branch in text
    text = text.replace(
        branch, branch + "  web_url: https://git.acme.example/gitops/commit/{sha}\n", 1
    )
    text = text.replace(
        "  awesome:\n    versions: semver\n",
        "  awesome:\n    versions: semver\n"
        f"    artifact: {{git_tags: '{source.as_uri()}'}}\n"
        f"    source: http://{forge.host}/acme/awesome\n",
    )
    prd = ANCHOR + "    url: https://{app}.prd.acme.example\n"
    if verify_url:
        prd += (
            "    verify:\n      metrics:\n        - name: smoke\n"
            f"          web: {{url: '{verify_url}'}}\n          interval: 1s\n"
        )
    text = text.replace(ANCHOR, prd)
    text += f"forges:\n  - {{host: '{forge.host}', kind: {kind}, api_url: '{api}'}}\n"
    policy_file.write_text(text)
    policy = parse_policy(text)
    chat = Chat(Conversation(policy, redis, Mirrors.of(policy, tmp_path / "bot", freshness=0)))
    return World(
        chat, policy, redis, forge, source, Mirrors.of(policy, tmp_path / "f", freshness=0)
    )


@pytest.fixture
def github(
    tmp_path: Path, remote: Path, redis: Redis, settings: Settings, policy_file: Path
) -> Iterator[World]:
    world = world_for(tmp_path, remote, redis, policy_file, "github")
    yield world
    world.forge.close()


def test_a_deploy_is_recorded_queued_in_progress_success_and_supersedes_the_last(
    github: World,
) -> None:
    first = github.deploy("2.1.0")
    [one] = github.forge.deployments.values()
    assert one["ref"] == github.tag("2.1.0")
    assert one["environment"] == "prd"
    assert one["payload"] == {"request": first, "version": "2.1.0", "digest": github.tag("2.1.0")}
    assert github.forge.statuses_of[1] == ["queued", "in_progress", "success"]
    bodies = one["status_bodies"]
    landed = RequestStore(github.redis).result(first)
    assert landed is not None
    assert bodies[1]["log_url"] == f"https://git.acme.example/gitops/commit/{landed.commit}"
    assert bodies[2]["environment_url"] == "https://awesome.prd.acme.example"
    github.deploy("2.2.0")
    assert github.forge.statuses_of[2] == ["queued", "in_progress", "success"]
    assert github.forge.statuses_of[1] == ["queued", "in_progress", "success", "inactive"]
    # Asked again, nothing is posted twice.
    assert jobs.record_deployments(first) == "nothing new"


def test_a_forge_that_refuses_never_fails_the_deploy_and_is_caught_up_in_order(
    github: World,
) -> None:
    github.forge.refuse = 10
    request_id = github.deploy("2.1.0")
    assert RequestStore(github.redis).state(request_id) is RequestState.PUSHED
    assert github.forge.deployments == {}
    github.forge.refuse = 0
    assert (
        jobs.record_deployments(request_id)
        == "awesome queued, awesome in_progress, awesome success"
    )
    assert github.forge.statuses_of[1] == ["queued", "in_progress", "success"]


def test_a_rejected_request_leaves_no_record(github: World) -> None:
    github.chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    github.chat.say("carol", "deploy-prd", "reject")
    run_worker(github.redis)
    assert github.forge.deployments == {}


def test_a_failed_verification_is_a_failure_and_its_rollback_a_deployment_of_its_own(
    tmp_path: Path, remote: Path, redis: Redis, settings: Settings, policy_file: Path
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/healthz"
    world = world_for(tmp_path, remote, redis, policy_file, "github", verify_url=url)
    try:
        world.deploy("2.1.0")
        world.verify_all()
        assert world.forge.statuses_of[1] == ["queued", "in_progress", "success"]
        Health.broken = True
        failed = world.deploy("2.2.0")
        assert world.forge.statuses_of[2] == ["queued", "in_progress"]  # verifying
        world.verify_all()  # fails, rolls back; the rollback lands
        record = verify.load(redis, failed)
        assert record is not None
        assert record.state == "failed"
        assert world.forge.statuses_of[2] == ["queued", "in_progress", "failure"]
        [rollback] = [
            d
            for d in world.forge.deployments.values()
            if d["payload"]["request"] == record.rollback
        ]
        assert rollback["ref"] == world.tag("2.1.0")
        assert world.forge.statuses_of[rollback["id"]] == ["queued", "in_progress", "success"]
        # The rollback replaced 2.1.0's deployment as the one running.
        assert world.forge.statuses_of[1][-1] == "inactive"
    finally:
        Health.broken = False
        server.shutdown()
        world.forge.close()


def test_gitlab_records_a_deployment_at_the_push_running_then_success(
    tmp_path: Path, remote: Path, redis: Redis, settings: Settings, policy_file: Path
) -> None:
    world = world_for(tmp_path, remote, redis, policy_file, "gitlab")
    try:
        request_id = world.deploy("2.1.0")
        [one] = world.forge.deployments.values()
        assert (one["sha"], one["ref"], one["environment"]) == (
            world.tag("2.1.0"),
            "2.1.0",
            {"name": "prd"},
        )
        assert world.forge.statuses_of[1] == ["running", "success"]
        assert ("POST /api/v4/projects/acme%2Fawesome/deployments", "") in world.forge.asked
        assert jobs.record_deployments(request_id) == "nothing new"
    finally:
        world.forge.close()


def test_an_images_labels_name_the_repository_and_commit_its_deployment_is_recorded_on(
    tmp_path: Path, remote: Path, redis: Redis, settings: Settings, policy_file: Path
) -> None:
    """No `source:` in the policy: the image's org.opencontainers.image.source and
    .revision labels (from a real registry) say where and on what."""
    forge = FakeCI()
    registry = start_registry(tmp_path / "registry")
    sha = "4f2a9c1e" * 5
    try:
        registry.push(IMAGE, "2.1.0", source=f"https://{forge.host}/acme/awesome", revision=sha)
        text = plain_policy(remote).replace(
            "  awesome:\n", f"  awesome:\n    artifact: {{image: {registry.host}/{IMAGE}}}\n", 1
        )
        api = f"http://{forge.host}/api/v3"
        text += f"forges:\n  - {{host: '{forge.host}', kind: github, api_url: '{api}'}}\n"
        policy_file.write_text(text)
        policy = parse_policy(text)
        chat = Chat(Conversation(policy, redis, Mirrors.of(policy, tmp_path / "bot", freshness=0)))
        request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
        chat.say("carol", "deploy-prd", "approve")
        run_worker(redis)
        [one] = forge.deployments.values()
        assert one["ref"] == sha
        assert one["payload"]["request"] == request_id
        assert one["payload"]["digest"].startswith("sha256:")
        assert forge.statuses_of[1] == ["queued", "in_progress", "success"]
    finally:
        registry.stop()
        forge.close()
