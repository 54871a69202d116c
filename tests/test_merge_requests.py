"""Landing through pull (merge) requests: opened when the request is made, merged through the
forge's API on quorum with the same message and trailers as a direct push, refusals said in
the forge's words and retried, closed when the request ends without landing. GitHub and
GitLab are small local servers that really merge into the bare remote."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue

from bot.conversation import Conversation
from bot.messages import result_text
from config.policy import parse_policy
from config.settings import Settings
from tests.conftest import Chat, Remote, git, outbox, plain_policy, run_worker
from tests.fake_forge import READ_ONLY, TOKEN, FakeForge, serve
from workers.git.mirrors import Mirrors
from workers.landing import mergerequests
from workers.landing.sweeper import sweep
from workers.state.lane import Lane, lane_name
from workers.state.request import RequestState
from workers.state.store import RequestStore


@dataclass
class World:
    chat: Chat
    redis: Redis
    origin: Remote
    forge: FakeForge

    def ask(self, text: str = "deploy awesome 2.1.0 to prd", channel: str = "deploy-prd") -> str:
        reply = self.chat.say("alice", channel, text)
        assert reply.request_id, reply.text
        return str(reply.request_id)

    def state(self, request_id: str) -> RequestState:
        return RequestStore(self.redis).state(request_id)

    def branch_exists(self, request_id: str) -> bool:
        return (
            subprocess.run(
                ["git", "rev-parse", "--verify", f"releasegate/{request_id}"],
                cwd=self.origin.path,
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )

    def retry(self) -> None:
        """What the workers do after the wait: the sweeper queues the request again."""
        time.sleep(mergerequests.RETRY + 0.1)
        policy = self.chat.conversation.policy
        sweep(self.redis, Lane(self.redis, lane_name(policy.repository)))
        run_worker(self.redis)


def make_world(
    tmp_path: Path,
    remote: Path,
    redis: Redis,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str = "github",
    token: str = TOKEN,
) -> Iterator[World]:
    forge = FakeForge(remote, kind)  # type: ignore[arg-type]
    server = serve(forge)
    api = f"http://127.0.0.1:{server.server_port}" + ("/api/v4" if kind == "gitlab" else "")
    text = plain_policy(remote).replace(
        "  branch: main\n",
        f"  branch: main\n  merge_request: {{forge: {kind}, api_url: '{api}', "
        "project: acme/environments}\n",
    )
    policy_file.write_text(text)
    monkeypatch.setenv("RELEASEGATE_FORGE_TOKEN", token)
    monkeypatch.setattr(mergerequests, "RETRY", 0.5)  # the forked work horses see it too
    policy = parse_policy(text)
    mirror = Mirrors.of(policy, tmp_path / "bot", freshness=0)
    yield World(Chat(Conversation(policy, redis, mirror)), redis, Remote(remote), forge)
    server.shutdown()


@pytest.fixture
def github(
    tmp_path: Path,
    remote: Path,
    redis: Redis,
    settings: Settings,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[World]:
    yield from make_world(tmp_path, remote, redis, policy_file, monkeypatch)


def test_a_pull_request_is_opened_when_asked_and_merged_with_the_trailers_on_approval(
    github: World,
) -> None:
    request_id = github.ask()
    run_worker(github.redis)  # the opening job: checks run while people approve
    [pull] = github.forge.pulls.values()
    assert (pull.head, pull.base, pull.title) == (
        f"releasegate/{request_id}",
        "main",
        "Deploy awesome 2.1.0 to prd",
    )
    assert b"newTag: 2.1.0" in github.origin.file(
        "env/prd/kustomization.yml", f"releasegate/{request_id}"
    )
    assert github.origin.count() == 1  # nothing on main yet
    assert f"{request_id}: pull request opened: {github.forge.url(1)}" in outbox(github.redis)[0]
    card = github.chat.say("bob", "deploy-prd", f"status {request_id}")
    assert card.ok

    github.chat.say("carol", "deploy-prd", "approve")
    run_worker(github.redis)
    assert github.state(request_id) is RequestState.MERGED
    message = github.origin.message()
    assert message.startswith("Deploy awesome 2.1.0 to prd\n")
    assert f"Releasegate-Request: {request_id}" in message
    assert "Approved-by: shell:carol" in message
    assert b"newTag: 2.1.0" in github.origin.file("env/prd/kustomization.yml")
    merges = [c for c in github.forge.calls if c[1].endswith("/merge")]
    assert merges[0][2]["merge_method"] == "squash"
    assert not github.branch_exists(request_id)
    result = RequestStore(github.redis).result(request_id)
    assert result is not None
    assert result.commit == github.origin.head()


def test_failing_checks_are_said_once_in_the_forges_words_and_the_merge_retried_when_green(
    github: World,
) -> None:
    github.forge.checks = "failure"
    request_id = github.ask()
    run_worker(github.redis)
    github.chat.say("carol", "deploy-prd", "approve")
    run_worker(github.redis)
    assert github.state(request_id) is RequestState.APPROVED  # waiting, not failed
    github.retry()  # still failing: tried again, not told again
    assert github.state(request_id) is RequestState.APPROVED
    refusals = [line for line in outbox(github.redis) if "will not merge yet" in line]
    assert refusals == [
        f'{request_id}: GitHub will not merge yet: Required status check "ci" '
        "is failing.; releasegate tries again every few seconds until the "
        "request expires"
    ]
    assert github.origin.count() == 1
    github.forge.pulls[1].checks = "success"
    github.retry()
    assert github.state(request_id) is RequestState.MERGED
    assert "Approved-by: shell:carol" in github.origin.message()


def test_a_conflict_after_another_change_landed_is_refused_and_said(github: World) -> None:
    request_id = github.ask()
    run_worker(github.redis)
    clone = github.origin.path.parent / "outside"
    git("clone", "--quiet", str(github.origin.path), str(clone))
    kustomization = clone / "env" / "prd" / "kustomization.yml"
    kustomization.write_text(kustomization.read_text().replace("newTag: 2.0.0", "newTag: 2.0.9"))
    git("-c", "user.name=o", "-c", "user.email=o@x", "commit", "-qam", "hotfix", cwd=clone)
    git("push", "--quiet", "origin", "main", cwd=clone)
    github.chat.say("carol", "deploy-prd", "approve")
    run_worker(github.redis)
    assert github.state(request_id) is RequestState.APPROVED
    assert any(
        "GitHub will not merge yet: Pull Request is not mergeable" in line
        for line in outbox(github.redis)
    )
    assert github.origin.message().startswith("hotfix")


@pytest.mark.parametrize(("who", "how"), [("alice", "cancel"), ("carol", "reject")])
def test_a_cancelled_or_rejected_request_closes_its_pull_request_and_deletes_its_branch(
    github: World, who: str, how: str
) -> None:
    request_id = github.ask()
    run_worker(github.redis)
    assert github.branch_exists(request_id)
    assert github.chat.say(who, "deploy-prd", f"{how} {request_id}").ok
    run_worker(github.redis)
    assert github.forge.pulls[1].state == "closed"
    assert not github.branch_exists(request_id)
    assert github.origin.count() == 1


def test_a_token_without_rights_is_said_plainly_and_nothing_lands(
    tmp_path: Path,
    remote: Path,
    redis: Redis,
    settings: Settings,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for world in make_world(tmp_path, remote, redis, policy_file, monkeypatch, token=READ_ONLY):
        request_id = world.ask()
        run_worker(redis)
        assert any(
            "could not open a pull request yet (GitHub refused releasegate's token "
            "(HTTP 403: Resource not accessible by integration))" in line
            for line in outbox(redis)
        )
        world.chat.say("carol", "deploy-prd", "approve")
        run_worker(redis)
        assert world.state(request_id) is RequestState.FAILED
        result = RequestStore(redis).result(request_id)
        assert result is not None
        assert "refused releasegate's token" in result.message
        assert world.origin.count() == 1


def test_where_nobody_approves_the_pull_request_is_opened_and_merged_at_once(
    github: World,
) -> None:
    request_id = github.ask("deploy awesome 2.1.0 to int", "deploy-int")
    run_worker(github.redis)
    assert github.state(request_id) is RequestState.MERGED
    assert github.forge.pulls[1].state == "merged"
    assert f"Releasegate-Request: {request_id}" in github.origin.message()


def test_gitlab_merge_requests_are_merged_with_the_same_message(
    tmp_path: Path,
    remote: Path,
    redis: Redis,
    settings: Settings,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for world in make_world(tmp_path, remote, redis, policy_file, monkeypatch, kind="gitlab"):
        request_id = world.ask()
        run_worker(redis)
        assert world.forge.pulls[1].head == f"releasegate/{request_id}"
        # Named as GitLab names it, where GitHub's is a pull request.
        assert f"{request_id}: merge request opened: {world.forge.url(1)}" in outbox(redis)[0]
        mergerequests.checks_round(
            redis, partial(parse_policy, policy_file.read_text()), Settings()
        )
        assert f"{request_id}: checks passing: {world.forge.url(1)}" in outbox(redis)
        world.chat.say("carol", "deploy-prd", "approve")
        run_worker(redis)
        assert world.state(request_id) is RequestState.MERGED
        message = world.origin.message()
        assert message.startswith("Deploy awesome 2.1.0 to prd\n")
        assert "Approved-by: shell:carol" in message
        assert world.forge.pulls[1].state == "merged"
        assert not world.branch_exists(request_id)


def test_the_checks_of_a_waiting_pull_request_are_shown_on_its_card_and_told_when_they_change(
    github: World, settings: Settings
) -> None:
    from bot.cards import card_for

    github.forge.checks = "pending"
    request_id = github.ask()
    run_worker(github.redis)
    policy = github.chat.conversation.policy
    for _ in range(2):  # unchanged checks are not told again
        mergerequests.checks_round(github.redis, lambda: policy, Settings())
    github.forge.pulls[1].checks = "success"
    mergerequests.checks_round(github.redis, lambda: policy, Settings())
    told = [line for line in outbox(github.redis) if ": checks " in line]
    assert told == [
        f"{request_id}: checks pending: {github.forge.url(1)}",
        f"{request_id}: checks passing: {github.forge.url(1)}",
    ]
    card = card_for(RequestStore(github.redis), request_id).text()
    assert f"🔀 {github.forge.url(1)} (checks passing)" in card


def test_a_rebase_merge_lands_the_branch_commit_rewritten_with_the_approvals(
    tmp_path: Path,
    remote: Path,
    redis: Redis,
    settings: Settings,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for world in make_world(tmp_path, remote, redis, policy_file, monkeypatch):
        policy_file.write_text(
            policy_file.read_text().replace(
                "project: acme/environments}", "project: acme/environments, merge_method: rebase}"
            )
        )
        request_id = world.ask()
        run_worker(redis)
        world.chat.say("carol", "deploy-prd", "approve")
        run_worker(redis)
        assert world.state(request_id) is RequestState.MERGED
        message = world.origin.message()
        assert "Approved-by: shell:carol" in message
        assert f"Releasegate-Request: {request_id}" in message
        assert world.origin.count() == 2  # the commit itself, on top of main: no merge commit


def test_an_expired_request_closes_its_pull_request(github: World) -> None:
    from datetime import UTC, datetime, timedelta

    request_id = github.ask()
    run_worker(github.redis)
    ctx = github.chat.conversation.ctx
    later = datetime.now(UTC) + timedelta(hours=3)  # past the two hours prd gives approvers
    ctx.clock = lambda: later
    assert ctx.expire_due() == [request_id]
    run_worker(github.redis)
    assert github.forge.pulls[1].state == "closed"
    assert not github.branch_exists(request_id)


def test_a_merge_while_the_pull_request_is_being_opened_waits_for_it_instead_of_a_second_one(
    github: World,
) -> None:
    request_id = github.ask()
    # The opening job is at work (holds its lease) when the approval's merge comes.
    github.redis.set(f"releasegate:opening:{request_id}", 1, ex=60)
    github.chat.say("carol", "deploy-prd", "approve")
    run_worker(github.redis)  # the opening job steps aside; the merge waits
    assert github.state(request_id) is RequestState.APPROVED
    assert github.forge.pulls == {}
    github.redis.delete(f"releasegate:opening:{request_id}")
    github.retry()
    assert github.state(request_id) is RequestState.MERGED
    assert len(github.forge.pulls) == 1


def test_a_merge_whose_worker_died_before_saying_so_is_found_on_main_not_merged_again(
    github: World,
) -> None:
    request_id = github.ask()
    run_worker(github.redis)
    github.chat.say("carol", "deploy-prd", "approve")
    run_worker(github.redis)
    store = RequestStore(github.redis)
    # As if the worker died between the forge's merge and recording the outcome.
    store.transition(request_id, [RequestState.MERGED], RequestState.RUNNING)
    policy = github.chat.conversation.policy
    sweep(github.redis, Lane(github.redis, lane_name(policy.repository)))
    run_worker(github.redis)
    assert github.state(request_id) is RequestState.MERGED
    assert len([c for c in github.forge.calls if c[1].endswith("/merge")]) == 1
    assert github.origin.count() == 2


def test_a_pull_request_job_queued_under_its_old_path_before_an_upgrade_still_runs(
    github: World,
) -> None:
    """Jobs are queued by dotted path: one queued before the house moved still opens."""
    from rq.serializers import JSONSerializer

    from workers.state.queue import QUEUE_NAME

    request_id = github.ask()
    github.redis.delete(f"rq:job:open-{request_id}")  # the job the bot queued, under the new path
    Queue(QUEUE_NAME, connection=github.redis, serializer=JSONSerializer).enqueue(
        "workers.mergerequests.open_change", request_id, job_id=f"old-open-{request_id}"
    )
    run_worker(github.redis)
    [pull] = github.forge.pulls.values()
    assert pull.head == f"releasegate/{request_id}"


def push_outside(world: World, ref: str, file: str, text: str, message: str = "outside") -> str:
    """A repository writer (not releasegate) commits `file` onto `ref` and pushes it."""
    clone = world.origin.path.parent / f"outside-{ref.replace('/', '-')}"
    if not clone.exists():
        git("clone", "--quiet", str(world.origin.path), str(clone))
    git("fetch", "--quiet", "origin", cwd=clone)
    git("checkout", "--quiet", "-B", ref, f"origin/{ref}", cwd=clone)
    (clone / file).parent.mkdir(parents=True, exist_ok=True)
    (clone / file).write_text(text)
    git("add", file, cwd=clone)
    git("-c", "user.name=mallory", "-c", "user.email=m@x", "commit", "-qm", message, cwd=clone)
    git("push", "--quiet", "origin", f"HEAD:refs/heads/{ref}", cwd=clone)
    return git("rev-parse", "HEAD", cwd=clone).strip()


def ended_once_with(world: World, request_id: str, words: str) -> str:
    """The request failed, saying `words`, and its thread was told exactly once."""
    assert world.state(request_id) is RequestState.FAILED
    result = RequestStore(world.redis).result(request_id)
    assert result is not None
    said = result_text(RequestStore(world.redis).get(request_id), result)
    assert words in said, said
    told = [line for line in outbox(world.redis) if line.startswith(f"{request_id}: failed")]
    assert told == [f"{request_id}: failed: {said}"]
    return said


@pytest.mark.parametrize("kind", ["github", "gitlab"])
def test_a_commit_pushed_onto_the_request_branch_after_it_opened_is_never_merged(
    tmp_path: Path,
    remote: Path,
    redis: Redis,
    settings: Settings,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    for world in make_world(tmp_path, remote, redis, policy_file, monkeypatch, kind=kind):
        request_id = world.ask()
        run_worker(redis)
        base = world.origin.head()
        push_outside(world, f"releasegate/{request_id}", "resources/backdoor.yml", "kind: Pod\n")
        world.chat.say("carol", "deploy-prd", "approve")
        run_worker(redis)
        ended_once_with(world, request_id, "someone pushed to")
        assert world.origin.head() == base  # nothing landed on main
        assert world.forge.pulls[1].state == "closed"
        assert not [c for c in world.forge.calls if c[1].endswith("/merge")]


def test_a_rebase_merge_refused_for_now_never_merges_a_head_pushed_while_it_waited(
    tmp_path: Path,
    remote: Path,
    redis: Redis,
    settings: Settings,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for world in make_world(tmp_path, remote, redis, policy_file, monkeypatch):
        policy_file.write_text(
            policy_file.read_text().replace(
                "project: acme/environments}", "project: acme/environments, merge_method: rebase}"
            )
        )
        world.forge.checks = "pending"
        request_id = world.ask()
        run_worker(redis)
        world.chat.say("carol", "deploy-prd", "approve")
        run_worker(redis)  # rewritten with the approvals, then refused: checks pending
        assert world.state(request_id) is RequestState.APPROVED
        push_outside(world, f"releasegate/{request_id}", "resources/backdoor.yml", "kind: Pod\n")
        world.forge.pulls[1].checks = "success"
        world.retry()
        ended_once_with(world, request_id, "someone pushed to")
        assert world.origin.count() == 1


def test_a_retargeted_pull_request_is_not_merged_anywhere(github: World) -> None:
    request_id = github.ask()
    run_worker(github.redis)
    git("branch", "staging", "main", cwd=github.origin.path)
    staging = git("rev-parse", "staging", cwd=github.origin.path).strip()
    github.forge.pulls[1].base = "staging"  # changed by hand in the forge's UI
    github.chat.say("carol", "deploy-prd", "approve")
    run_worker(github.redis)
    ended_once_with(github, request_id, "now merges into staging, not main")
    assert git("rev-parse", "staging", cwd=github.origin.path).strip() == staging
    assert github.origin.count() == 1


def test_a_forged_trailer_on_main_does_not_mark_the_request_merged(github: World) -> None:
    request_id = github.ask()
    run_worker(github.redis)
    forged = push_outside(
        github,
        "main",
        "resources/backdoor.yml",
        "kind: Pod\n",
        message=f"innocent\n\nReleasegate-Request: {request_id}\nApproved-by: shell:carol\n",
    )
    github.chat.say("carol", "deploy-prd", "approve")
    run_worker(github.redis)
    assert github.state(request_id) is RequestState.MERGED
    result = RequestStore(github.redis).result(request_id)
    assert result is not None
    assert result.commit == github.origin.head() != forged
    assert b"newTag: 2.1.0" in github.origin.file("env/prd/kustomization.yml")


def test_an_untrusted_head_of_main_at_merge_time_stops_the_merge(
    tmp_path: Path,
    remote: Path,
    redis: Redis,
    settings: Settings,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.test_signing import allowed_signers, push_signed_commit, ssh_key

    key, public = ssh_key(tmp_path)
    signers = allowed_signers(tmp_path / "allowed", public)
    monkeypatch.setenv("RELEASEGATE_GIT_SIGNING_KEY", str(key))
    for world in make_world(tmp_path, remote, redis, policy_file, monkeypatch):
        # A trusted head to start from: a signed commit on main.
        push_signed_commit(remote, tmp_path / "signed", key)
        policy_file.write_text(
            policy_file.read_text().replace(
                "  branch: main\n", f"  branch: main\n  trusted_signers: {signers}\n"
            )
        )
        request_id = world.ask()
        run_worker(redis)
        assert world.forge.pulls, outbox(redis)
        unsigned = push_outside(world, "main", "resources/other.yml", "kind: ConfigMap\n")
        world.chat.say("carol", "deploy-prd", "approve")
        run_worker(redis)
        ended_once_with(world, request_id, f"the branch head {unsigned[:7]} is not signed")
        assert world.origin.head() == unsigned


def test_github_actions_check_runs_count_beside_commit_statuses(github: World) -> None:
    """GitHub Actions reports check runs, not statuses: a failing or running one is said."""
    from bot.cards import card_for

    request_id = github.ask()
    run_worker(github.redis)
    policy = github.chat.conversation.policy
    github.forge.pulls[1].runs = [("completed", "success"), ("in_progress", None)]
    mergerequests.checks_round(github.redis, lambda: policy, Settings())
    github.forge.pulls[1].runs = [("completed", "success"), ("completed", "failure")]
    mergerequests.checks_round(github.redis, lambda: policy, Settings())
    github.forge.pulls[1].runs = [("completed", "success"), ("completed", "skipped")]
    mergerequests.checks_round(github.redis, lambda: policy, Settings())
    told = [line for line in outbox(github.redis) if ": checks " in line]
    assert told == [
        f"{request_id}: checks pending: {github.forge.url(1)}",
        f"{request_id}: checks failing: {github.forge.url(1)}",
        f"{request_id}: checks passing: {github.forge.url(1)}",
    ]
    assert "(checks passing)" in card_for(RequestStore(github.redis), request_id).text()


def test_a_gitlab_project_that_fast_forwards_lands_the_branch_commit_with_its_approvals(
    tmp_path: Path,
    remote: Path,
    redis: Redis,
    settings: Settings,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GitLab's project settings win over the policy's merge_method: a fast-forward project
    that never squashes lands the branch's own commit, rewritten with the approvals."""
    for world in make_world(tmp_path, remote, redis, policy_file, monkeypatch, kind="gitlab"):
        world.forge.project = {"merge_method": "ff", "squash_option": "never"}
        request_id = world.ask()  # the policy asks for squash
        run_worker(redis)
        world.chat.say("carol", "deploy-prd", "approve")
        run_worker(redis)
        assert world.state(request_id) is RequestState.MERGED
        assert world.origin.count() == 2  # no merge commit, no squash: the commit itself
        message = world.origin.message()
        assert "Approved-by: shell:carol" in message
        assert f"Releasegate-Request: {request_id}" in message
        [merge] = [c for c in world.forge.calls if c[1].endswith("/merge")]
        assert merge[2]["squash"] is False
