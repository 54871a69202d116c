"""The gate: who may ask, who may approve, and that refusals leave nothing behind."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from redis import Redis

from bot.conversation import Conversation
from bot.events import ChatEvent
from tests.conftest import Chat, Remote, run_worker
from workers.state.queue import job_queue
from workers.state.request import RequestState
from workers.state.store import RequestStore


def nothing_happened(redis: Redis, origin: Remote) -> None:
    """No request stored, nothing queued, nothing committed."""
    assert redis.keys("releasegate:request:*") == []
    assert job_queue(redis).count == 0
    assert origin.count() == 1


def test_a_deploy_to_an_ungated_environment_is_queued_at_once(chat: Chat, redis: Redis) -> None:
    reply = chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int")
    assert reply.ok
    assert reply.queued == (reply.request_id,)
    assert "queued: awesome: 2.0.0 -> 2.1.0 (int)" in reply.text
    assert job_queue(redis).job_ids == [reply.request_id]


def test_a_gated_deploy_waits_for_approval_and_shows_its_diff(chat: Chat, redis: Redis) -> None:
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to production")
    assert reply.ok
    assert reply.request_id
    assert not reply.queued
    assert "needs 1 approval from group:release-managers" in reply.text
    assert "-    newTag: 2.0.0\n+    newTag: 2.1.0" in reply.text
    assert "-      - appVersion=2.0.0\n+      - appVersion=2.1.0" in reply.text
    assert RequestStore(redis).state(reply.request_id) is RequestState.PENDING
    assert job_queue(redis).count == 0


def test_an_approver_approval_queues_the_request(chat: Chat, redis: Redis) -> None:
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    reply = chat.say("carol", "deploy-prd", "approve")
    assert reply.ok
    assert reply.queued == (request_id,)
    assert reply.text == f"{request_id} approved by carol (1/1); queued"
    assert job_queue(redis).job_ids == [request_id]
    assert RequestStore(redis).approvals(str(request_id)) == ["shell:carol"]


def test_an_approval_reaction_counts_like_the_word(chat: Chat, redis: Redis) -> None:
    request_id = str(chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id)
    assert chat.react("carol", "deploy-prd", "tada", request_id) == []  # means nothing
    [reply] = chat.react("carol", "deploy-prd", "white_check_mark", request_id)
    assert reply.queued == (request_id,)


@pytest.mark.parametrize("emoji", ["✅", "👍", "+1", "thumbsup", ":thumbsup:", "heavy_check_mark"])
def test_every_spelling_of_an_approval_reaction_approves(chat: Chat, emoji: str) -> None:
    """Slack says `+1`, Rocket.Chat `:thumbsup:`, a terminal the emoji itself: one reaction."""
    request_id = str(chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id)
    [reply] = chat.react("carol", "deploy-prd", emoji, request_id)
    assert reply.queued == (request_id,)


def test_a_reject_reaction_by_an_approver_ends_the_request(chat: Chat, redis: Redis) -> None:
    request_id = str(chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id)
    [reply] = chat.react("carol", "deploy-prd", "x", request_id)
    assert reply.text == f"{request_id} rejected by carol"
    assert RequestStore(redis).state(request_id) is RequestState.REJECTED


@pytest.mark.parametrize(
    ("user", "channel", "text", "answer"),
    [
        (
            "alice",
            "deploy-prd",
            "deploy awsome 2.1.0 to prd",
            "unknown app 'awsome'; did you mean `awesome`? known apps: awesome",
        ),
        (
            "alice",
            "deploy-prd",
            "deploy awesome 2.1.0 to staging",
            "unknown environment 'staging'; known environments: int, prd",
        ),
        ("alice", "deploy-prd", "yeet", "unknown command 'yeet'; say one of: deploy, promote"),
        (
            "alice",
            "deploy-int",
            "deploy awesome 2.1.0 to prd",
            "deploys to prd are requested in shell:deploy-prd, not here",
        ),
        ("mallory", "deploy-prd", "deploy awesome 2.1.0 to prd", "mallory may not deploy to prd"),
        (
            "alice",
            "deploy-prd",
            "deploy awesome 2.1.0\nnewTag:x to prd",
            "is not a valid version of awesome",
        ),
        (
            "alice",
            "deploy-prd",
            "deploy awesome --upload-pack=touch%20x to prd",
            "is not a valid version of awesome",
        ),
        ("alice", "deploy-prd", "deploy awesome $(reboot) to prd", "is not a valid version"),
        (
            "alice",
            "deploy-prd",
            "deploy awesome " + "9" * 500 + " to prd",
            "is not a valid version",
        ),
        ("alice", "deploy-prd", "deploy awesome 2.0.0 to prd", "awesome already runs 2.0.0 in prd"),
    ],
)
def test_refused_requests_say_why_and_leave_nothing_behind(
    chat: Chat, redis: Redis, origin: Remote, user: str, channel: str, text: str, answer: str
) -> None:
    reply = chat.say(user, channel, text)
    assert answer in reply.text
    nothing_happened(redis, origin)


def test_a_refused_long_version_is_not_echoed_whole(chat: Chat) -> None:
    reply = chat.say("alice", "deploy-prd", "deploy awesome " + "9" * 500 + " to prd")
    assert len(reply.text) < 200


@pytest.mark.parametrize(
    ("user", "text", "answer"),
    [
        ("alice", "approve", "the requester cannot approve their own request"),
        ("bob", "approve", "bob may not approve deploys to prd; approvers: group:release-managers"),
        ("carol", "approve RZZZZZZ", "there is no request RZZZZZZ"),
    ],
)
def test_approvals_that_do_not_count(
    chat: Chat, redis: Redis, user: str, text: str, answer: str
) -> None:
    request_id = str(chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id)
    reply = chat.say(user, "deploy-prd", text)
    assert not reply.ok
    assert answer in reply.text
    assert RequestStore(redis).state(request_id) is RequestState.PENDING
    assert RequestStore(redis).approvals(request_id) == []
    assert job_queue(redis).count == 0


def test_approving_twice_counts_once(conversation: Conversation, redis: Redis, chat: Chat) -> None:
    policy = conversation.policy
    env = policy.environments["prd"].model_copy(update={"approvals": 2})
    twice = policy.model_copy(update={"environments": {**policy.environments, "prd": env}})
    conversation.ctx.policy = twice
    policy.groups["release-managers"].append("shell:dave")
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    assert "approval 1/2 by carol; 1 more needed" in chat.say("carol", "deploy-prd", "approve").text
    again = chat.say("carol", "deploy-prd", "approve")
    assert not again.ok
    assert "carol already approved" in again.text
    assert job_queue(redis).count == 0
    assert chat.say("dave", "deploy-prd", "approve").queued == (request_id,)


@pytest.mark.parametrize("ending", ["approve", "reject not now", "cancel"])
def test_a_finished_request_cannot_be_approved(
    conversation: Conversation, chat: Chat, redis: Redis, ending: str
) -> None:
    conversation.policy.groups["release-managers"].append("shell:dave")
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    who = "alice" if ending == "cancel" else "carol"
    assert chat.say(who, "deploy-prd", f"{ending.split()[0]} {request_id} {ending[7:]}").ok
    reply = chat.say("dave", "deploy-prd", f"approve {request_id}")
    assert not reply.ok
    assert "it cannot be changed any more" in reply.text
    assert job_queue(redis).count == (1 if ending == "approve" else 0)


def test_approving_again_after_ones_own_approval_ended_it_says_already_approved(
    chat: Chat, redis: Redis
) -> None:
    """A person whose answer was lost (a failover) asks again: told their approval counted,
    not only that the request moved on; nothing is queued twice."""
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    assert chat.say("carol", "deploy-prd", f"approve {request_id}").queued == (request_id,)
    again = chat.say("carol", "deploy-prd", f"approve {request_id}")
    assert not again.ok
    assert again.reason == "duplicate"
    assert again.text == f"carol already approved {request_id}"
    assert job_queue(redis).count == 1


def test_approve_without_id_needs_exactly_one_pending_request(chat: Chat) -> None:
    assert "no request is waiting here" in chat.say("carol", "deploy-prd", "approve").text
    chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    chat.say("bob", "deploy-prd", "deploy awesome 2.2.0 to prd")
    assert "several requests are waiting here" in chat.say("carol", "deploy-prd", "approve").text


def test_only_the_requester_or_an_approver_may_cancel(chat: Chat, redis: Redis) -> None:
    request_id = str(chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id)
    assert "only the requester or an approver" in chat.say("bob", "deploy-prd", "cancel").text
    assert RequestStore(redis).state(request_id) is RequestState.PENDING


def test_two_approvers_racing_enqueue_exactly_once(
    conversation: Conversation, chat: Chat, redis: Redis
) -> None:
    approvers = [f"shell:rm{i}" for i in range(8)]
    conversation.policy.groups["release-managers"].extend(approvers)
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    start = threading.Barrier(len(approvers))
    queued: list[tuple[str, ...]] = []

    def approve(user: str) -> None:
        event = ChatEvent(platform="shell", user=user, channel="deploy-prd", text="approve")
        start.wait()
        queued.extend(r.queued for r in conversation.handle(event))

    threads = [threading.Thread(target=approve, args=(a[6:],)) for a in approvers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [q for q in queued if q] == [(request_id,)]
    assert job_queue(redis).job_ids == [request_id]


def test_an_expired_request_cannot_be_approved(chat: Chat, conversation: Conversation) -> None:
    request_id = str(chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id)
    request = conversation.store.get(request_id)
    assert request.expires_at is not None
    conversation.ctx.clock = lambda: request.expires_at  # type: ignore[assignment,return-value]
    reply = chat.say("carol", "deploy-prd", "approve")
    assert not reply.ok
    assert "expired before it was approved" in reply.text
    assert conversation.store.state(request_id) is RequestState.EXPIRED


def test_status_reads_versions_from_git(chat: Chat) -> None:
    reply = chat.say("bob", "deploy-prd", "status")
    assert reply.text.startswith("awesome: int 2.0.0, prd 2.0.0\n(read from Git at ")
    assert reply.text.endswith("pending: none")
    assert chat.say("bob", "deploy-prd", "status prod").text.startswith("awesome: prd 2.0.0")


def test_status_of_a_request_shows_its_state(chat: Chat) -> None:
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    reply = chat.say("bob", "deploy-prd", f"status {request_id}")
    assert reply.text.startswith(f"{request_id} (pending): awesome: 2.0.0 -> 2.1.0 (prd)")


def test_status_of_a_pushed_request_names_people_alike_and_shows_its_commit(
    chat: Chat, redis: Redis, origin: Remote
) -> None:
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    chat.say("carol", "deploy-prd", "approve")
    run_worker(redis)
    assert chat.say("bob", "deploy-prd", f"status {request_id}").text.startswith(
        f"{request_id} (pushed): awesome: 2.0.0 -> 2.1.0 (prd); requested by alice; "
        f"approved by carol\ncommit {origin.head()[:12]}"
    )


def test_redis_gone_mid_conversation_is_answered_with_a_reference_not_a_traceback(
    conversation: Conversation, caplog: pytest.LogCaptureFixture
) -> None:
    from redis import Redis as Client

    ctx = conversation.ctx
    broken = Conversation(ctx.policy, Client(port=1, socket_connect_timeout=0.2), ctx.mirror)
    event = ChatEvent(platform="shell", user="alice", channel="deploy-prd", text="status prd")
    [reply] = broken.handle(event)
    assert not reply.ok
    assert reply.text.startswith("releasegate cannot reach its Redis right now (reference ")
    ref = reply.text.split("(reference ")[1].split(")")[0]
    assert any(ref in r.getMessage() for r in caplog.records)


def test_an_unexpected_failure_is_answered_with_a_reference_not_a_traceback(
    conversation: Conversation, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A dependency answering other than we expect (here Redis, where someone overwrote the
    index of pending requests by hand): one short line for the asker, a traceback in the log."""
    redis.set("releasegate:pending", "overwritten by hand")
    event = ChatEvent(
        platform="shell", user="alice", channel="deploy-prd", text="deploy awesome 2.1.0 to prd"
    )
    [reply] = conversation.handle(event)
    assert not reply.ok, reply.text
    assert reply.text.startswith("something went wrong on releasegate's side (reference ")
    assert "Traceback" not in reply.text
    ref = reply.text.split("(reference ")[1].split(")")[0]
    assert any(ref in r.getMessage() and r.exc_info for r in caplog.records)


def test_an_ended_request_is_kept_for_the_retention_period_then_dropped(
    chat: Chat, redis: Redis
) -> None:
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    chat.say("carol", "deploy-prd", "approve")
    assert redis.ttl(f"releasegate:request:{request_id}") == -1  # still owed an outcome
    chat.say("carol", "deploy-prd", f"cancel {request_id}")
    month = 30 * 24 * 3600
    for key in (f"releasegate:request:{request_id}", f"releasegate:request:{request_id}:approvals"):
        assert month - 60 < redis.ttl(key) <= month


def limited(policy_file: Path, chat: Chat, **limits: int) -> None:
    """prd with per-person limits, as the bot loads it."""
    from config.policy import parse_policy

    text = policy_file.read_text()
    anchor = "    approval_ttl: 2h\n"
    extra = "".join(f"    {name}: {value}\n" for name, value in limits.items())
    policy_file.write_text(text.replace(anchor, anchor + extra))
    chat.conversation.ctx.policy = parse_policy(policy_file.read_text())


def test_one_person_may_hold_only_so_many_open_requests_and_is_told_which(
    chat: Chat, redis: Redis, policy_file: Path
) -> None:
    limited(policy_file, chat, max_open_requests=2)
    first = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    second = chat.say("alice", "deploy-prd", "deploy awesome 2.1.1 to prd").request_id
    refused = chat.say("alice", "deploy-prd", "deploy awesome 2.1.2 to prd")
    assert not refused.ok
    assert refused.reason == "limit_open"
    assert "2 open requests for prd (the limit is 2 per person)" in refused.text
    assert f"{first}" in refused.text
    assert f"{second}" in refused.text
    assert len(RequestStore(redis).pending_all()) == 2  # nothing more was filed
    assert chat.say("bob", "deploy-prd", "deploy awesome 2.1.2 to prd").ok  # others may
    chat.say("alice", "deploy-prd", f"cancel {first}")
    assert chat.say("alice", "deploy-prd", "deploy awesome 2.1.3 to prd").ok


def test_one_person_may_file_only_so_many_requests_a_minute(
    chat: Chat, redis: Redis, policy_file: Path
) -> None:
    limited(policy_file, chat, requests_per_minute=2, max_open_requests=50)
    for version in ("2.1.0", "2.1.1"):
        assert chat.say("alice", "deploy-prd", f"deploy awesome {version} to prd").ok
    refused = chat.say("alice", "deploy-prd", "deploy awesome 2.1.2 to prd")
    assert refused.reason == "limit_rate"
    assert "more than 2 deploys to prd in the last minute" in refused.text
    assert len(RequestStore(redis).pending_all()) == 2
