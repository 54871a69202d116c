"""One request per change: asking again points at the waiting one, and a request made stale by
another that landed first is closed as superseded, its card and thread told once."""

from __future__ import annotations

import os
from pathlib import Path

from redis import Redis

from bot.conversation import Conversation
from config.policy import parse_policy
from config.settings import Settings
from tests.conftest import Chat, Remote, git, outbox, run_worker
from workers.git.mirrors import Mirrors
from workers.state.request import RequestState
from workers.state.store import RequestStore


def test_asking_again_for_a_waiting_change_points_at_it_and_files_nothing(
    chat: Chat, redis: Redis
) -> None:
    first = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    again = chat.say("bob", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert not again.ok
    assert again.text.startswith(
        f"the same change already waits for approval as {first.request_id} (asked by alice)"
    )
    assert again.request_id is None
    assert RequestStore(redis).pending_all() == [first.request_id]
    # So a bare `approve` is not ambiguous.
    assert chat.say("carol", "deploy-prd", "approve").queued == (first.request_id,)


def test_asking_again_for_a_queued_change_says_it_is_queued(chat: Chat, redis: Redis) -> None:
    first = chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int")
    assert first.queued
    again = chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int")
    assert again.text.startswith(f"the same change is already queued as {first.request_id}")
    run_worker(redis)
    # Once it landed, asking again is simply already done.
    assert (
        "already runs 2.1.0 in int"
        in chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int").text
    )


def test_a_request_made_stale_by_one_that_landed_is_closed_as_superseded_and_told_once(
    chat: Chat, redis: Redis
) -> None:
    older = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    newer = chat.say("bob", "deploy-prd", "deploy awesome 2.2.0 to prd").request_id
    other_env = chat.say("alice", "deploy-int", "deploy awesome 2.3.0 to int").request_id
    chat.say("carol", "deploy-prd", f"approve {newer}")
    run_worker(redis)
    store = RequestStore(redis)
    assert store.state(str(newer)) is RequestState.PUSHED
    assert store.state(str(other_env)) is RequestState.PUSHED  # int is another pin
    assert store.state(str(older)) is RequestState.SUPERSEDED
    told = [line for line in outbox(redis) if line.startswith(f"{older}:")]
    assert told == [
        f"{older}: superseded: {newer} landed first, so awesome in prd is now 2.2.0, "
        "not 2.0.0; ask again if still wanted"
    ]
    late = chat.say("carol", "deploy-prd", f"approve {older}")
    assert not late.ok
    assert store.state(str(older)) is RequestState.SUPERSEDED


def test_a_version_an_image_tag_cannot_hold_is_refused_and_nothing_is_filed(
    chat: Chat, redis: Redis, origin: Remote
) -> None:
    reply = chat.say("alice", "deploy-int", "deploy awesome 2.1.0+build.1 to int")
    assert not reply.ok
    assert "cannot hold '2.1.0+build.1': it must be an image tag" in reply.text
    assert reply.request_id is None
    assert RequestStore(redis).active() == []
    run_worker(redis)
    assert origin.count() == 1


CHART_POLICY = """\
repository: {{url: "{url}", author: "releasegate <rg@example.invalid>"}}
environments:
  prd:
    channels: ["shell:deploy-prd"]
    deployers: ["shell:alice"]
    approvers: ["shell:carol"]
    approvals: 1
apps:
  shop:
    versions: '[0-9]+(\\.[0-9]+)*'
    pins:
      prd:
        - {{file: chart/Chart.yaml, yaml_path: appVersion}}
        - {{file: chart/values.yaml, yaml_path: image.tag, format: "v{{version}}"}}
"""


def test_pins_that_disagree_are_shown_and_a_request_converges_them(
    tmp_path: Path, redis: Redis, settings: Settings
) -> None:
    seed, remote = tmp_path / "seed", tmp_path / "chart.git"
    (seed / "chart").mkdir(parents=True)
    (seed / "chart" / "Chart.yaml").write_text('name: shop\nappVersion: "1.0"\n')
    (seed / "chart" / "values.yaml").write_text("image:\n  repository: acme/shop\n  tag: v5\n")
    git("init", "--quiet", "--initial-branch=main", cwd=seed)
    git("add", "--all", cwd=seed)
    git("-c", "user.name=s", "-c", "user.email=s@x", "commit", "-qm", "seed", cwd=seed)
    git("clone", "--quiet", "--bare", str(seed), str(remote))
    policy = parse_policy(CHART_POLICY.format(url=remote.as_uri()))
    chat = Chat(Conversation(policy, redis, Mirrors.of(policy, tmp_path / "w", freshness=0)))
    settings_policy = Path(os.environ["RELEASEGATE_POLICY"])
    settings_policy.write_text(CHART_POLICY.format(url=remote.as_uri()))

    assert chat.say("carol", "deploy-prd", "status shop").text.startswith("shop: prd 1.0 | 5")
    reply = chat.say("alice", "deploy-prd", "deploy shop 6.0 to prd")
    assert reply.ok, reply.text
    assert "shop: 1.0 | 5 -> 6.0 (prd)" in reply.text
    assert '-appVersion: "1.0"' in reply.text
    assert "+  tag: v6.0" in reply.text
    chat.say("carol", "deploy-prd", "approve")
    run_worker(redis)
    assert RequestStore(redis).state(str(reply.request_id)) is RequestState.PUSHED
    origin = Remote(remote)
    assert origin.file("chart/Chart.yaml") == b'name: shop\nappVersion: "6.0"\n'
    assert b"tag: v6.0" in origin.file("chart/values.yaml")
    assert chat.say("carol", "deploy-prd", "status shop").text.startswith("shop: prd 6.0")
