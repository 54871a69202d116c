"""The checks gate: CI must have passed on the commit the image was built from (its
`org.opencontainers.image.revision`, in the repository its `.source` names), read from the
GitHub or GitLab stand-in as their REST APIs answer. A failing, a missing and a pending check
each refuse, naming it with its link; green lands; a check that fails after the approval
stops the commit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from bot.conversation import Conversation
from config.policy import parse_policy
from config.settings import Settings
from tests.conftest import Chat, Remote, outbox, run_worker
from tests.fake_ci import FakeCI
from tests.registry import Registry, start_registry
from workers.git.mirrors import Mirrors
from workers.state.request import RequestState
from workers.state.store import RequestStore

IMAGE = "bespinian/awesome-image"
SHA = "4f2a9c1e" * 5


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    started = start_registry(tmp_path / "registry")
    yield started
    started.stop()


@pytest.fixture
def ci() -> Iterator[FakeCI]:
    fake = FakeCI()
    yield fake
    fake.close()


def gated(
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    registry: Registry,
    ci: FakeCI,
    kind: str = "github",
    checks: str = "all",
) -> Chat:
    api = f"http://{ci.host}/api/v3" if kind == "github" else f"http://{ci.host}/api/v4"
    text = policy_file.read_text()
    text = text.replace(
        "  awesome:\n", f"  awesome:\n    artifact: {{image: {registry.host}/{IMAGE}}}\n", 1
    )
    text = text.replace(
        "    approval_ttl: 2h\n", f"    approval_ttl: 2h\n    gates: {{checks: {checks}}}\n", 1
    )
    text += f"forges:\n  - {{host: '{ci.host}', kind: {kind}, api_url: '{api}'}}\n"
    policy_file.write_text(text)
    policy = parse_policy(text)
    return Chat(Conversation(policy, redis, Mirrors.of(policy, settings.workdir, freshness=0)))


@pytest.mark.parametrize("kind", ["github", "gitlab"])
def test_green_ci_on_the_source_commit_lands_and_the_card_says_so(
    kind: str,
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    registry: Registry,
    ci: FakeCI,
    origin: Remote,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELEASEGATE_FORGE_TOKEN", "ci-reader-token")
    chat = gated(policy_file, redis, settings, registry, ci, kind)
    registry.push(IMAGE, "2.1.0", source=f"https://{ci.host}/acme/awesome", revision=SHA)
    if kind == "github":
        ci.runs[SHA] = [("build", "completed", "success"), ("lint", "completed", "neutral")]
        ci.statuses[SHA] = [("e2e", "success")]
    else:
        ci.statuses[SHA] = [("build", "success"), ("docs", "skipped")]
        ci.pipelines[SHA] = ["success"]
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert reply.request_id, reply.text
    assert f"✓ checks passed on awesome's {SHA[:7]}: " in reply.text
    chat.say("carol", "deploy-prd", "approve")
    run_worker(redis)
    assert RequestStore(redis).state(reply.request_id) is RequestState.PUSHED
    assert origin.count() == 2
    assert f"Source-Revision: {SHA}\n" in origin.message()  # where lead time starts
    assert all(auth.endswith("ci-reader-token") for _path, auth in ci.asked)


@pytest.mark.parametrize(
    ("runs", "statuses", "said"),
    [
        ([("build", "completed", "failure")], [], "failed CI: build (failure) https:"),
        ([("build", "in_progress", None)], [], "is still being checked: build (pending)"),
        ([], [("e2e", "pending")], "is still being checked: e2e (pending)"),
        ([], [], "has no CI result at all"),
    ],
)
def test_a_failing_a_pending_or_no_check_refuses_naming_it(
    runs: list[tuple[str, str, str | None]],
    statuses: list[tuple[str, str]],
    said: str,
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    registry: Registry,
    ci: FakeCI,
    origin: Remote,
) -> None:
    chat = gated(policy_file, redis, settings, registry, ci)
    registry.push(IMAGE, "2.1.0", source=f"https://{ci.host}/acme/awesome", revision=SHA)
    ci.runs[SHA], ci.statuses[SHA] = runs, statuses
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert reply.reason == "checks", reply.text
    assert f"awesome's source commit {SHA[:7]} {said}" in reply.text
    assert redis.keys("releasegate:request:*") == []
    assert origin.count() == 1


def test_named_checks_must_each_exist_and_pass(
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    registry: Registry,
    ci: FakeCI,
) -> None:
    chat = gated(policy_file, redis, settings, registry, ci, checks="[build, e2e]")
    registry.push(IMAGE, "2.1.0", source=f"https://{ci.host}/acme/awesome", revision=SHA)
    ci.runs[SHA] = [("build", "completed", "success"), ("flaky", "completed", "failure")]
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert "has no e2e check yet" in reply.text, reply.text
    ci.statuses[SHA] = [("e2e", "success")]
    assert chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id


def test_an_image_that_names_no_source_commit_is_refused(
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    registry: Registry,
    ci: FakeCI,
) -> None:
    chat = gated(policy_file, redis, settings, registry, ci)
    registry.push(IMAGE, "2.1.0")
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert reply.reason == "checks"
    assert "names none (org.opencontainers.image.source and .revision" in reply.text


def test_a_check_that_fails_after_the_approval_stops_the_commit(
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    registry: Registry,
    ci: FakeCI,
    origin: Remote,
) -> None:
    chat = gated(policy_file, redis, settings, registry, ci)
    registry.push(IMAGE, "2.1.0", source=f"https://{ci.host}/acme/awesome", revision=SHA)
    ci.runs[SHA] = [("build", "completed", "success")]
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    chat.say("carol", "deploy-prd", "approve")
    ci.runs[SHA] = [("build", "completed", "success"), ("e2e", "completed", "failure")]
    run_worker(redis)
    assert RequestStore(redis).state(str(reply.request_id)) is RequestState.FAILED
    [told] = outbox(redis)
    assert "failed CI: e2e (failure)" in told, told
    assert origin.count() == 1
