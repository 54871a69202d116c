"""The gate cannot be fooled: each attack that once landed a forbidden commit, now refused.

Every test plays the attack through the real server (Rocket.Chat's webhook
and reaction polling against the stand-in) or the shell, runs a real worker,
and shows that nothing was committed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from tests.conftest import Chat, Remote, git, outbox, run_worker
from tests.test_rocketchat import RocketWorld, rocket_world
from workers.state.request import RequestState

IDENTITY_POLICY = """
repository: {{url: "{url}", author: "releasegate <rg@example.invalid>"}}
people:
  carol: ["shell:carol", "rocketchat:carol"]
  dave: ["shell:dave", "rocketchat:id-dave"]
groups:
  developers: ["rocketchat:alice", "rocketchat:bob", "shell:alice"]
  release-managers: ["person:carol", "person:dave", "rocketchat:erin"]
environments:
  int:
    channels: ["rocketchat:deploy-int", "shell:deploy-int"]
    deployers: ["group:developers", "group:release-managers"]
  prd:
    channels: ["rocketchat:deploy-prd", "shell:deploy-prd"]
    deployers: ["group:developers", "group:release-managers"]
    approvers: ["group:release-managers"]
    approvals: {approvals}
apps:
  awesome:
    pins:
      int: [{{file: env/int/kustomization.yml, kustomize_image: bespinian/awesome-image}}]
      prd: [{{file: env/prd/kustomization.yml, kustomize_image: bespinian/awesome-image}}]
"""


@pytest.fixture(params=[1])
def world(
    request: pytest.FixtureRequest,
    redis: Redis,
    remote: Path,
    policy_file: Path,
    settings: object,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RocketWorld]:
    text = IDENTITY_POLICY.format(url=remote.as_uri(), approvals=request.param)
    with rocket_world(text, redis, policy_file, monkeypatch) as found:
        yield found


two_approvals = pytest.mark.parametrize("world", [2], indirect=True)


def settle(world: RocketWorld, request_id: str) -> RequestState:
    """Wait until the webhook's work has run; returns the request's state after it."""
    world.settle()
    return world.store.state(request_id)


def shell(world: RocketWorld) -> Chat:
    return Chat(world.adapter.conversation)


def said_to(world: RocketWorld, card: str) -> list[str]:
    return [m["msg"] for m in world.fake.posted() if m.get("tmid") == card]


def test_a_developer_renamed_to_an_approvers_id_cannot_approve(
    world: RocketWorld, redis: Redis, origin: Remote
) -> None:
    """bob takes dave's id as his username; the webhook's user_id still says who he is."""
    world.webhook("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    request_id, card = world.card()
    world.fake.rename("bob", "id-dave")
    world.webhook("id-dave", "deploy-prd", "approve", tmid=card)
    assert settle(world, request_id) is RequestState.PENDING
    assert any("may not approve" in text for text in said_to(world, card))
    world.fake.react("id-dave", card, "white_check_mark")  # the same, as a reaction
    world.adapter.poll_once(messages_too=False)
    assert world.store.state(request_id) is RequestState.PENDING
    assert world.store.approvals(request_id) == []
    run_worker(redis)
    assert origin.count() == 1


def test_a_renamed_requester_still_cannot_approve_their_own_request(
    world: RocketWorld, redis: Redis, origin: Remote
) -> None:
    world.webhook("carol", "deploy-prd", "deploy awesome 2.1.0 to prd")
    request_id, card = world.card()
    world.fake.rename("carol", "carol2")
    world.webhook("carol2", "deploy-prd", "approve", tmid=card)
    assert settle(world, request_id) is RequestState.PENDING
    assert any("cannot approve their own request" in text for text in said_to(world, card))
    run_worker(redis)
    assert origin.count() == 1


@two_approvals
def test_an_approver_who_renames_counts_once(
    world: RocketWorld, redis: Redis, origin: Remote
) -> None:
    world.webhook("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    request_id, card = world.card()
    world.webhook("dave", "deploy-prd", "approve", tmid=card)
    world.fake.rename("dave", "dave2")
    world.webhook("dave2", "deploy-prd", "approve", tmid=card)
    world.fake.react("dave2", card, "white_check_mark")
    world.adapter.poll_once(messages_too=False)
    assert settle(world, request_id) is RequestState.PENDING
    assert world.store.approvals(request_id) == ["rocketchat:id-dave"]
    assert any("already approved" in text for text in said_to(world, card))
    run_worker(redis)
    assert origin.count() == 1


def test_one_person_cannot_approve_on_one_platform_what_they_asked_for_on_another(
    world: RocketWorld, redis: Redis, origin: Remote
) -> None:
    asked = shell(world).say("carol", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert asked.request_id
    world.webhook("carol", "deploy-prd", f"approve {asked.request_id}")
    assert settle(world, asked.request_id) is RequestState.PENDING
    assert any("cannot approve their own request" in m["msg"] for m in world.fake.posted())
    run_worker(redis)
    assert origin.count() == 1


@two_approvals
def test_two_approvals_by_one_person_on_two_platforms_count_once(
    world: RocketWorld, redis: Redis, origin: Remote
) -> None:
    asked = shell(world).say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert asked.request_id
    assert shell(world).say("dave", "deploy-prd", f"approve {asked.request_id}").ok
    world.webhook("dave", "deploy-prd", f"approve {asked.request_id}")
    assert settle(world, asked.request_id) is RequestState.PENDING
    assert world.store.approvals(asked.request_id) == ["shell:dave"]
    run_worker(redis)
    assert origin.count() == 1


def test_an_approver_may_approve_from_another_platform_than_the_request(
    world: RocketWorld, redis: Redis, origin: Remote
) -> None:
    asked = shell(world).say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    world.webhook("erin", "deploy-prd", f"approve {asked.request_id}")
    assert settle(world, str(asked.request_id)) is RequestState.APPROVED
    run_worker(redis)
    assert "Approved-by: rocketchat:id-erin" in origin.message()


def test_a_mention_in_a_refused_command_is_not_repeated_live(world: RocketWorld) -> None:
    world.webhook("alice", "deploy-prd", "deploy @all 2.1.0 to prd")
    world.webhook("alice", "deploy-prd", "deploy awesome 2.1.0 to <!channel>")
    world.fake.wait_for_posts(2)
    texts = [m["msg"] for m in world.fake.posted()]
    assert any("unknown app '@\u2060all'" in text for text in texts)
    assert not any("@all" in text or "<!channel>" in text for text in texts)


# The policy changes under a waiting request: the worker counts again before it commits.


def raise_approvals(policy_file: Path, to: int) -> None:
    text = policy_file.read_text()
    policy_file.write_text(text.replace("    approvals: 1\n", f"    approvals: {to}\n"))


def test_approvals_are_counted_again_against_the_policy_the_worker_has_now(
    chat: Chat, redis: Redis, origin: Remote, policy_file: Path
) -> None:
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    raise_approvals(policy_file, 2)  # the bot still runs the old policy: one is enough there
    assert chat.say("carol", "deploy-prd", "approve").queued == (request_id,)
    run_worker(redis)
    assert chat.conversation.store.state(str(request_id)) is RequestState.FAILED
    assert (
        "the policy now asks for 2 approval(s) of deploys to prd and 1 still count"
        in (outbox(redis)[0])
    )
    assert origin.count() == 1


def test_an_approver_removed_from_the_policy_no_longer_counts_at_the_commit(
    chat: Chat, redis: Redis, origin: Remote, policy_file: Path
) -> None:
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    assert chat.say("carol", "deploy-prd", "approve").queued == (request_id,)
    text = policy_file.read_text()
    removed = text.replace(
        'release-managers: ["shell:carol", "shell:dave"]', 'release-managers: ["shell:dave"]'
    )
    assert removed != text, "the demo policy's release managers changed; update this test"
    policy_file.write_text(removed)
    run_worker(redis)
    assert "shell:carol is no longer an approver of prd" in outbox(redis)[0]
    assert origin.count() == 1


# What the repository's own content can do.


def with_validation(policy_file: Path, command: str, allowed: list[str] | None = None) -> None:
    extra = f"    validate: {json.dumps(command)}\n"
    if allowed:
        extra += f"    validate_env: {json.dumps(allowed)}\n"
    text = policy_file.read_text()
    policy_file.write_text(text.replace("    approval_ttl: 2h\n", "    approval_ttl: 2h\n" + extra))


SECRETS = {
    "RELEASEGATE_SLACK_BOT_TOKEN": "xoxb-very-secret-bot-token",
    "RELEASEGATE_SLACK_SIGNING_SECRET": "signing-secret-value-42",
    "RELEASEGATE_ROCKETCHAT_TOKEN": "rc-personal-token-77",
}


def test_the_validation_command_does_not_see_the_workers_secrets(
    chat: Chat,
    redis: Redis,
    origin: Remote,
    policy_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    script = tmp_path / "tools" / "dump_env.py"
    script.write_text(
        "import os, sys\nfor k, v in sorted(os.environ.items()): print(k, v)\nsys.exit(1)\n"
    )
    with_validation(policy_file, f"python3 {script}")
    chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    chat.say("carol", "deploy-prd", "approve")
    run_worker(redis)
    [report] = outbox(redis)
    assert "failed (exit 1)" in report
    assert "PATH " in report
    for name, value in SECRETS.items():
        assert name not in report
        assert value not in report
    assert all(value not in str(entry) for entry in redis.xrange("releasegate:audit"))
    assert origin.count() == 1


def test_a_secret_the_validation_command_prints_is_blanked_out(
    chat: Chat,
    redis: Redis,
    origin: Remote,
    policy_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Even where an operator lets a secret through `validate_env`, chat never shows it."""
    monkeypatch.setenv("RELEASEGATE_SLACK_BOT_TOKEN", SECRETS["RELEASEGATE_SLACK_BOT_TOKEN"])
    script = tmp_path / "tools" / "leak.py"
    script.write_text(
        "import os, sys\nprint('token is', os.environ['RELEASEGATE_SLACK_BOT_TOKEN'])\n"
        "sys.exit(2)\n"
    )
    with_validation(policy_file, f"python3 {script}", ["RELEASEGATE_SLACK_BOT_TOKEN"])
    chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    chat.say("carol", "deploy-prd", "approve")
    run_worker(redis)
    [report] = outbox(redis)
    assert "token is ***" in report
    assert SECRETS["RELEASEGATE_SLACK_BOT_TOKEN"] not in report
    assert origin.count() == 1


def link_prd_file(origin: Remote, tmp_path: Path, target: str) -> None:
    """Someone replaces prd's pinned file with a symbolic link to `target`, and pushes."""
    clone = tmp_path / f"elsewhere-{time.monotonic_ns()}"
    git("clone", "--quiet", str(origin.path), str(clone))
    pinned = clone / "env/prd/kustomization.yml"
    pinned.unlink()
    pinned.symlink_to(target)
    git("add", "--all", cwd=clone)
    git("-c", "user.name=h", "-c", "user.email=h@x", "commit", "-qm", "a link", cwd=clone)
    git("push", "--quiet", "origin", "main", cwd=clone)


def test_a_pinned_file_that_is_a_symlink_is_refused_not_written_through(
    chat: Chat, redis: Redis, origin: Remote, tmp_path: Path
) -> None:
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    chat.say("carol", "deploy-prd", "approve")
    # prd's file becomes a link to int's: writing prd would change int.
    link_prd_file(origin, tmp_path, "../int/kustomization.yml")
    head = origin.head()
    run_worker(redis)
    assert chat.conversation.store.state(str(request_id)) is RequestState.FAILED
    assert "env/prd/kustomization.yml is a symbolic link" in outbox(redis)[0]
    assert origin.head() == head
    refused = chat.say("alice", "deploy-prd", "deploy awesome 2.2.0 to prd")
    assert not refused.ok
    assert "is a symbolic link" in refused.text


def test_a_pin_that_links_into_dot_git_shows_nothing_of_it(
    chat: Chat, redis: Redis, origin: Remote, tmp_path: Path
) -> None:
    link_prd_file(origin, tmp_path, "../../.git/config")
    answer = chat.say("bob", "deploy-prd", "status awesome").text
    assert "prd unreadable (env/prd/kustomization.yml is a symbolic link" in answer
    assert "[core]" not in answer
    assert "repositoryformatversion" not in answer


def test_rollback_refuses_a_version_the_app_would_not_accept(
    chat: Chat, redis: Redis, origin: Remote, tmp_path: Path
) -> None:
    for old, new in (("2.0.0", "nightly"), ("nightly", "2.2.0")):
        clone_edit(origin, tmp_path, old, new)
    reply = chat.say("bob", "deploy-prd", "rollback awesome in prd")
    assert not reply.ok
    assert "nightly is not a valid version of awesome" in reply.text
    assert origin.count() == 3


def clone_edit(origin: Remote, tmp_path: Path, old: str, new: str) -> None:
    clone = tmp_path / f"edit-{new}"
    git("clone", "--quiet", str(origin.path), str(clone))
    path = clone / "env/prd/kustomization.yml"
    path.write_text(path.read_text().replace(old, new))
    git("-c", "user.name=h", "-c", "user.email=h@x", "commit", "-qam", f"to {new}", cwd=clone)
    git("push", "--quiet", "origin", "main", cwd=clone)


def test_a_policy_path_is_read_literally_never_as_a_git_pathspec(
    chat: Chat, policy_file: Path
) -> None:
    """`*` as a pinned file would match every file as a pathspec; literally, it is no file."""
    text = policy_file.read_text()
    policy_file.write_text(text.replace("file: env/prd/kustomization.yml", "file: '*'"))
    from config.policy import load_policy

    chat.conversation.ctx.policy = load_policy(policy_file)
    answer = chat.say("bob", "deploy-prd", "history prd").text
    assert answer == "no commits touch prd's pinned files"


@two_approvals
def test_the_commit_credits_only_the_approvals_that_still_count(
    world: RocketWorld, redis: Redis, origin: Remote, policy_file: Path
) -> None:
    asked = shell(world).say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    shell(world).say("dave", "deploy-prd", f"approve {asked.request_id}")
    world.webhook("erin", "deploy-prd", f"approve {asked.request_id}")
    assert settle(world, str(asked.request_id)) is RequestState.APPROVED
    text = policy_file.read_text()
    text = text.replace("    approvals: 2\n", "    approvals: 1\n")
    policy_file.write_text(text.replace(', "rocketchat:erin"]', "]"))
    run_worker(redis)
    assert world.store.state(str(asked.request_id)) is RequestState.PUSHED
    trailers = [line for line in origin.message().splitlines() if line.startswith("Approved-by")]
    assert trailers == ["Approved-by: shell:dave"]
