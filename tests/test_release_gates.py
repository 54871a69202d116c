"""Release gates on the request path and again on the worker path, with a controllable clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis import Redis

from bot.conversation import Conversation
from config.policy import parse_policy
from config.settings import Settings
from tests.conftest import Chat, Remote, git, outbox, run_worker
from workers.git.mirrors import Mirrors
from workers.state import audit
from workers.state.request import RequestState
from workers.state.store import RequestStore

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


GATED = """
repository: {{url: "{url}", author: "releasegate <rg@example.invalid>"}}
groups:
  developers: ["shell:alice", "shell:bob"]
  release-managers: ["shell:carol", "shell:dave"]
environments:
  int:
    channels: ["shell:deploy-int"]
    deployers: ["group:developers", "group:release-managers"]
  prd:
    aliases: [production]
    channels: ["shell:deploy-prd"]
    deployers: ["group:developers", "group:release-managers"]
    approvers: ["group:release-managers"]
    approvals: 2
    approval_ttl: 2h
    promote_from: int
    prereleases: false
    windows: [{windows}]
apps:
  awesome:
    pins:
      int:
        - {{file: env/int/kustomization.yml, kustomize_image: bespinian/awesome-image}}
        - {{file: env/int/kustomization.yml, configmap_literal: awesome-config/appVersion}}
      prd:
        - {{file: env/prd/kustomization.yml, kustomize_image: bespinian/awesome-image}}
        - {{file: env/prd/kustomization.yml, configmap_literal: awesome-config/appVersion}}
  web:
    pins:
      int: [{{file: apps/web/values-int.yaml, yaml_path: image.tag}}]
      prd: [{{file: apps/web/values-prd.yaml, yaml_path: image.tag}}]
"""

WORKDAY = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # a Tuesday, 11:00 in Zurich
OFFICE_HOURS = '"Mon-Thu 08:00-17:00 Europe/Zurich"'
WEB_VALUES = "image:\n  repository: ghcr.io/acme/web\n  tag: 1.0.0\n"

Gated = Callable[[str, datetime], tuple[Chat, Clock]]


@pytest.fixture
def make_gated(
    policy_file: Path, redis: Redis, settings: Settings, remote: Path, tmp_path: Path
) -> Gated:
    """The seed's flow: int runs candidates, prd takes finals int has run, two approvers.

    A second app, web, is pinned in Helm values. The worker reads the same
    policy file, with the real clock.
    """
    clone = tmp_path / "add-web"
    git("clone", "--quiet", str(remote), str(clone))
    (clone / "apps/web").mkdir(parents=True)
    for env in ("int", "prd"):
        (clone / f"apps/web/values-{env}.yaml").write_text(WEB_VALUES)
    git("add", "--all", cwd=clone)
    git("-c", "user.name=demo", "-c", "user.email=d@x", "commit", "-qm", "Add web", cwd=clone)
    git("push", "--quiet", "origin", "main", cwd=clone)

    def make(windows: str, now: datetime) -> tuple[Chat, Clock]:
        policy_file.write_text(GATED.format(url=remote.as_uri(), windows=windows))
        policy = parse_policy(policy_file.read_text())
        clock = Clock(now)
        checkout = Mirrors.of(policy, settings.workdir, freshness=0)
        return Chat(Conversation(policy, redis, checkout, clock)), clock

    return make


@pytest.fixture
def gated(make_gated: Gated) -> tuple[Chat, Clock]:
    """Always open, and the clock starts now, so the worker's gates agree with the chat's."""
    return make_gated("", datetime.now(UTC))


@pytest.fixture
def office(make_gated: Gated) -> tuple[Chat, Clock]:
    """Office hours only, on a Tuesday morning long ago."""
    return make_gated(OFFICE_HOURS, WORKDAY)


def to_int(chat: Chat, redis: Redis, version: str) -> None:
    reply = chat.say("alice", "deploy-int", f"deploy awesome {version} to int")
    assert reply.queued, reply.text
    run_worker(redis)


def approve_twice(chat: Chat, request_id: str | None) -> None:
    chat.say("carol", "deploy-prd", f"approve {request_id}")
    assert chat.say("dave", "deploy-prd", f"approve {request_id}").queued == (request_id,)


def test_prd_refuses_a_version_int_has_not_run_and_names_what_it_has(
    gated: tuple[Chat, Clock], redis: Redis, origin: Remote
) -> None:
    chat, _ = gated
    to_int(chat, redis, "2.1.1-rc1")
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.2.0 to prd")
    assert reply.text == "awesome 2.2.0 has not run in int yet; int has run: 2.1.1-rc1, 2.0.0"
    assert origin.count() == 3


def test_a_final_release_counts_as_run_when_its_candidate_ran(
    gated: tuple[Chat, Clock], redis: Redis
) -> None:
    chat, _ = gated
    to_int(chat, redis, "2.1.1-rc1")
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.1 to prd")
    assert reply.request_id, reply.text
    assert "needs 2 approvals" in reply.text


def test_prd_refuses_prereleases(gated: tuple[Chat, Clock], redis: Redis) -> None:
    chat, _ = gated
    to_int(chat, redis, "2.1.1-rc1")
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.1-rc1 to prd")
    assert reply.text == "prd takes no prereleases; 2.1.1-rc1 is one"


def test_deploy_env_promotes_the_final_of_ints_candidate_as_one_train_commit(
    gated: tuple[Chat, Clock], redis: Redis, origin: Remote, settings: Settings
) -> None:
    chat, _ = gated
    to_int(chat, redis, "2.1.1-rc1")
    reply = chat.say("bob", "deploy-prd", "deploy production")
    assert reply.text.startswith("promotion request R")
    assert "awesome: 2.0.0 -> 2.1.1 (prd)" in reply.text
    approve_twice(chat, reply.request_id)
    run_worker(redis)
    message = origin.message()
    assert message.startswith("Deploy awesome 2.1.1 to prd\n\nawesome: 2.0.0 -> 2.1.1 (prd)\n")
    assert "Releasegate-Kind: promote\n" in message
    assert "Approved-by: shell:carol\nApproved-by: shell:dave\n" in message
    # What int ran is recorded: the rc the final came from.
    assert "\nawesome: promoted from int 2.1.1-rc1\n" in message
    assert message.endswith("Promoted-from: int 2.1.1-rc1\n\n")


def test_deploy_env_lands_every_app_that_differs_as_one_release_train(
    gated: tuple[Chat, Clock], redis: Redis, origin: Remote, settings: Settings
) -> None:
    chat, _ = gated
    to_int(chat, redis, "2.1.1-rc2")
    assert chat.say("alice", "deploy-int", "deploy web 1.1.0 to int").queued
    run_worker(redis)
    before = origin.count()
    reply = chat.say("bob", "deploy-prd", "deploy production")
    assert reply.text.startswith("release train request R")
    assert "awesome: 2.0.0 -> 2.1.1 (prd); web: 1.0.0 -> 1.1.0 (prd)" in reply.text
    assert "+  tag: 1.1.0" in reply.text
    assert "+    newTag: 2.1.1" in reply.text
    approve_twice(chat, reply.request_id)
    run_worker(redis)
    assert origin.count() == before + 1
    assert origin.message().startswith(
        "Release train to prd: awesome 2.1.1, web 1.1.0\n\n"
        "awesome: 2.0.0 -> 2.1.1 (prd)\nweb: 1.0.0 -> 1.1.0 (prd)\n"
        "awesome: promoted from int 2.1.1-rc2\nweb: promoted from int 1.1.0\n\n"
    )
    assert "Promoted-from: int 2.1.1-rc2 (awesome)\nPromoted-from: int 1.1.0 (web)\n" in (
        origin.message()
    )
    assert "Releasegate-Kind: train" in origin.message()
    assert chat.say("bob", "deploy-prd", "status").text.startswith(
        "awesome: int 2.1.1-rc2, prd 2.1.1\nweb: int 1.1.0, prd 1.1.0\n"
    )


def test_nothing_to_promote_says_so(gated: tuple[Chat, Clock]) -> None:
    chat, _ = gated
    reply = chat.say("bob", "deploy-prd", "deploy prd")
    assert reply.text == "nothing to promote: every app in prd already runs what int runs"


def test_rollback_pins_the_version_before_the_current_one(
    gated: tuple[Chat, Clock], redis: Redis, origin: Remote
) -> None:
    chat, _ = gated
    to_int(chat, redis, "2.1.0")
    to_int(chat, redis, "2.2.0")
    reply = chat.say("bob", "deploy-int", "rollback awesome in int")
    assert reply.text.startswith(
        f"{reply.request_id} rollback queued: awesome: 2.2.0 -> 2.1.0 (int)"
    )
    run_worker(redis)
    assert origin.message().startswith("Roll back awesome to 2.1.0 in int\n")
    assert "Releasegate-Kind: rollback" in origin.message()


def test_rolling_back_again_steps_further_back_never_forward(
    gated: tuple[Chat, Clock], redis: Redis, origin: Remote
) -> None:
    chat, _ = gated
    for version in ("2.1.0", "2.2.0", "2.3.0"):
        to_int(chat, redis, version)
    steps = []
    for _ in range(3):
        steps.append(chat.say("bob", "deploy-int", "rollback awesome in int").text)
        run_worker(redis)
    assert "awesome: 2.3.0 -> 2.2.0 (int)" in steps[0]
    assert "awesome: 2.2.0 -> 2.1.0 (int)" in steps[1]
    assert "awesome: 2.1.0 -> 2.0.0 (int)" in steps[2]
    refused = chat.say("bob", "deploy-int", "rollback awesome in int")
    assert not refused.ok
    assert "no earlier version of awesome in int" in refused.text
    # A deploy after a rollback is a new top: rolling back returns to what ran before it.
    to_int(chat, redis, "2.4.0")
    assert (
        "awesome: 2.4.0 -> 2.0.0 (int)"
        in chat.say("bob", "deploy-int", "rollback awesome in int").text
    )


def test_rollback_is_gated_like_a_deploy(
    gated: tuple[Chat, Clock], redis: Redis, origin: Remote
) -> None:
    chat, _ = gated
    to_int(chat, redis, "2.1.0")
    reply = chat.say("carol", "deploy-prd", "deploy awesome 2.1.0 to prd")
    approve_twice_by = ("dave", "alice")
    chat.say(approve_twice_by[0], "deploy-prd", "approve")
    assert "alice may not approve" in chat.say(approve_twice_by[1], "deploy-prd", "approve").text
    chat.say("carol", "deploy-prd", f"cancel {reply.request_id}")
    assert (
        "no earlier version of awesome in prd"
        in chat.say("bob", "deploy-prd", "rollback awesome in prd").text
    )


def test_a_locked_environment_refuses_requests_and_approvals(
    office: tuple[Chat, Clock], redis: Redis
) -> None:
    chat, _ = office
    to_int(chat, redis, "2.1.0")
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    assert chat.say("bob", "deploy-prd", "lock prd").text == (
        "bob may not lock or unlock prd; who may: group:release-managers"
    )
    assert chat.say("carol", "deploy-prd", "lock prd incident 42").ok
    refused = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert refused.text.startswith("prd is locked by carol since 2026-11-24 10:00 UTC: incident 42")
    assert "prd is locked by carol" in chat.say("dave", "deploy-prd", f"approve {request_id}").text
    status = chat.say("bob", "deploy-prd", "status prd").text
    assert "🔒 prd is locked by carol since 2026-11-24 10:00 UTC: incident 42" in status
    assert chat.say("carol", "deploy-prd", "unlock prd incident over").text == (
        "🔓 prd unlocked by carol: incident over"
    )
    assert "approval 1/2" in chat.say("dave", "deploy-prd", f"approve {request_id}").text


def test_who_may_lock_is_the_policys_lockers_else_approvers_else_deployers(
    tmp_path: Path, redis: Redis, settings: Settings, policy_file: Path
) -> None:
    text = policy_file.read_text().replace(
        '    channels: ["shell:deploy-int"]\n',
        '    channels: ["shell:deploy-int"]\n    lockers: ["shell:carol"]\n',
    )
    policy = parse_policy(text)
    chat = Chat(Conversation(policy, redis, Mirrors.of(policy, tmp_path / "w")))
    assert "may not lock" in chat.say("alice", "deploy-int", "lock int").text
    assert chat.say("carol", "deploy-int", "lock int").ok  # named in lockers
    plain = parse_policy(policy_file.read_text())
    chat = Chat(Conversation(plain, redis, Mirrors.of(plain, tmp_path / "w")))
    chat.say("carol", "deploy-int", "unlock int")
    # int has no approvers: its deployers may lock it (before, nobody could).
    assert chat.say("alice", "deploy-int", "lock int").ok
    assert chat.say("carol", "deploy-prd", "lock prd").ok  # prd's approvers
    assert "may not lock" in chat.say("alice", "deploy-prd", "unlock prd").text


def test_a_lock_taken_while_the_job_waits_stops_it_before_the_push(
    gated: tuple[Chat, Clock], redis: Redis, origin: Remote, settings: Settings
) -> None:
    chat, clock = gated
    to_int(chat, redis, "2.1.0")
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    approve_twice(chat, request_id)
    chat.say("carol", "deploy-prd", "lock prd freeze")
    head = origin.head()
    run_worker(redis)
    assert RequestStore(redis).state(str(request_id)) is RequestState.FAILED
    assert origin.head() == head
    since = clock.now.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    assert outbox(redis)[-1] == (
        f"{request_id}: failed: prd is locked by carol since {since}: freeze; until it is "
        "unlocked only carol may deploy there"
    )


def test_outside_its_windows_prd_refuses_and_says_when_it_opens(
    office: tuple[Chat, Clock], redis: Redis
) -> None:
    chat, clock = office
    to_int(chat, redis, "2.1.0")
    clock.now = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)  # a Friday
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert reply.text == (
        "prd is outside its deploy windows (Mon-Thu 08:00-17:00 Europe/Zurich); "
        "it opens Mon 2026-11-30 08:00 CET"
    )


def test_a_job_that_runs_after_the_window_closed_fails_without_pushing(
    make_gated: Gated, redis: Redis, origin: Remote
) -> None:
    """The window is a day that is not today (real time), so the worker finds it closed."""
    other = datetime.now(UTC) + timedelta(days=2)
    chat, _ = make_gated(f'"{DAYS[other.weekday()]} 00:00-23:59 UTC"', other.replace(hour=12))
    to_int(chat, redis, "2.1.0")
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    approve_twice(chat, request_id)
    run_worker(redis)
    assert RequestStore(redis).state(str(request_id)) is RequestState.FAILED
    assert "prd is outside its deploy windows" in outbox(redis)[-1]
    assert origin.count() == 3


def test_an_approved_job_that_runs_after_expiry_fails(
    make_gated: Gated, redis: Redis, origin: Remote
) -> None:
    chat, _clock = make_gated("", WORKDAY)
    to_int(chat, redis, "2.1.0")
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    approve_twice(chat, request_id)  # approved on 2026-11-24: long expired when the worker runs
    run_worker(redis)
    assert RequestStore(redis).state(str(request_id)) is RequestState.FAILED
    assert outbox(redis)[-1].startswith(
        f"{request_id}: failed: {request_id} expired at 2026-11-24T12:00"
    )
    assert origin.count() == 3


def test_a_pending_request_expires_and_cannot_be_approved(
    gated: tuple[Chat, Clock], redis: Redis
) -> None:
    chat, clock = gated
    to_int(chat, redis, "2.1.0")
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    clock.now += timedelta(hours=2)
    reply = chat.say("carol", "deploy-prd", f"approve {request_id}")
    assert (
        reply.text == f"{request_id} expired before it was approved; ask again with a new request"
    )
    assert f"{request_id} (expired)" in chat.say("bob", "deploy-prd", f"status {request_id}").text


def test_any_approver_can_reject_after_another_approved(
    gated: tuple[Chat, Clock], redis: Redis
) -> None:
    chat, _ = gated
    to_int(chat, redis, "2.1.0")
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    chat.say("carol", "deploy-prd", "approve")
    assert chat.say("dave", "deploy-prd", "reject smoke tests red").text == (
        f"{request_id} rejected by dave: smoke tests red"
    )
    assert RequestStore(redis).state(str(request_id)) is RequestState.REJECTED


def test_a_withdrawn_reaction_no_longer_counts(gated: tuple[Chat, Clock], redis: Redis) -> None:
    chat, _ = gated
    to_int(chat, redis, "2.1.0")
    request_id = str(chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id)
    chat.react("carol", "deploy-prd", "+1", request_id)
    assert RequestStore(redis).approvals(request_id) == ["shell:carol"]
    [reply] = chat.conversation.react(chat_event("carol"), "+1", request_id, added=False)
    assert reply.text == f"carol withdrew their approval of {request_id}"
    assert RequestStore(redis).approvals(request_id) == []


def chat_event(user: str):  # type: ignore[no-untyped-def]
    from bot.events import ChatEvent

    return ChatEvent(platform="shell", user=user, user_name=user, channel="deploy-prd", text="")


def test_history_lists_deploys_with_who_asked_and_approved(
    gated: tuple[Chat, Clock], redis: Redis, origin: Remote, tmp_path: Path
) -> None:
    chat, _ = gated
    to_int(chat, redis, "2.1.0")
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    approve_twice(chat, request_id)
    run_worker(redis)
    lines = chat.say("bob", "deploy-prd", "history prd 5").text.splitlines()
    assert lines[0] == "last 3 change(s) to prd, newest first:"
    assert lines[1].endswith(
        f"Deploy awesome 2.1.0 to prd ({request_id}; asked by shell:alice, "
        "approved by shell:carol,shell:dave)"
    )
    assert lines[2].endswith("Add web (by hand: demo)")
    assert lines[3].endswith("Initial desired state (by hand: demo)")
    assert git("rev-parse", "--short=7", "main", cwd=origin.path).strip() == lines[1][:7]


def test_the_audit_stream_records_every_step(gated: tuple[Chat, Clock], redis: Redis) -> None:
    chat, _ = gated
    to_int(chat, redis, "2.1.0")
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    chat.say("alice", "deploy-prd", "approve")
    chat.say("carol", "deploy-prd", "approve")
    chat.say("dave", "deploy-prd", "reject no")
    chat.say("carol", "deploy-prd", "lock prd")
    events = [(e.event, e.fields.get("request", e.fields.get("env"))) for e in audit.read(redis)]
    assert events[2:] == [
        ("requested", request_id),
        ("refused", request_id),
        ("approved", request_id),
        ("rejected", request_id),
        ("locked", "prd"),
    ]
    assert [e for e, _ in events[:2]] == ["requested", "outcome"]


def test_the_lock_holder_may_deploy_and_roll_back_while_everyone_else_is_refused(
    chat: Chat, redis: Redis, origin: Remote, policy_file: Path
) -> None:
    """Lock, then roll back: the incident flow. Others are told who holds the lock, and
    another approver may still approve the holder's request."""
    assert '"shell:carol", "shell:dave"' in policy_file.read_text()  # two release managers
    first = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    assert chat.say("dave", "deploy-prd", f"approve {first}").queued == (first,)
    run_worker(redis)
    assert chat.say("carol", "deploy-prd", "lock prd bad release").ok
    refused = chat.say("alice", "deploy-prd", "rollback awesome in prd")
    assert not refused.ok
    assert "until it is unlocked only carol may deploy there" in refused.text
    rollback = chat.say("carol", "deploy-prd", "rollback awesome in prd")
    assert rollback.request_id, rollback.text
    assert chat.say("dave", "deploy-prd", f"approve {rollback.request_id}").ok
    run_worker(redis)
    assert RequestStore(redis).state(str(rollback.request_id)) is RequestState.PUSHED
    assert b"newTag: 2.0.0" in origin.file("env/prd/kustomization.yml")


def test_a_refusal_that_belongs_to_no_request_is_in_the_audit_too(
    gated: tuple[Chat, Clock], redis: Redis
) -> None:
    """docs/policy.md promises every refusal: "alice may not lock prd" and a deploy refused
    because prd is locked are no request's, and are recorded all the same."""
    chat, _ = gated
    chat.say("alice", "deploy-prd", "lock prd")
    chat.say("carol", "deploy-prd", "lock prd")
    chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    refused = [e.fields for e in audit.read(redis) if e.event == "refused"]
    assert [(f["by"], f["reason"]) for f in refused] == [
        ("shell:alice", "not_locker"),
        ("shell:alice", "locked"),
    ]
    assert "prd is locked by carol" in refused[1]["why"]
