"""Evidence before a deploy, and times nothing deploys: the alerts gate against a real
Alertmanager, freezes, and `lock all`.

A firing alert that matches the environment's matchers refuses a request when it is filed
and stops its commit when it begins firing after the approval; a silence lets it through;
a rollback is never blocked by an alert. Each refusal leaves nothing committed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis import Redis

from bot.conversation import Conversation
from config.policy import parse_policy
from config.settings import Settings
from tests.alertmanager import Alertmanager, start_alertmanager
from tests.conftest import Chat, Remote, outbox, run_worker
from workers.git.mirrors import Mirrors
from workers.state.request import RequestState
from workers.state.store import RequestStore

PRD = "    approval_ttl: 2h\n"


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    manager = start_alertmanager(tmp_path / "alertmanager")
    yield manager
    manager.stop()


def chat_with(policy_file: Path, redis: Redis, settings: Settings, prd: str) -> Chat:
    """A chat whose policy's prd has `prd` added (the worker reads the same file)."""
    text = policy_file.read_text()
    assert PRD in text
    policy_file.write_text(text.replace(PRD, PRD + prd, 1))
    policy = parse_policy(policy_file.read_text())
    return Chat(Conversation(policy, redis, Mirrors.of(policy, settings.workdir, freshness=0)))


def alerts_gate(url: str, required: bool = True) -> str:
    matchers = """['severity="critical"', 'env="{env}"']"""
    return f"    gates: {{alerts: {{alertmanager: '{url}', matchers: {matchers}, required: {str(required).lower()}}}}}\n"


@pytest.fixture
def gated(policy_file: Path, redis: Redis, settings: Settings, alertmanager: Alertmanager) -> Chat:
    return chat_with(policy_file, redis, settings, alerts_gate(alertmanager.url))


def test_a_firing_alert_refuses_a_deploy_naming_it_and_a_silence_lets_it_through(
    gated: Chat, alertmanager: Alertmanager, origin: Remote, redis: Redis
) -> None:
    alertmanager.fire(
        "Error rate above 5%", alertname="HighErrorRate", severity="critical", env="prd"
    )
    reply = gated.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert not reply.ok
    assert reply.reason == "alert"
    assert "prd has a firing alert: HighErrorRate: Error rate above 5% (since " in reply.text
    assert redis.keys("releasegate:request:*") == []
    alertmanager.silence(alertname="HighErrorRate")
    reply = gated.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert reply.request_id, reply.text
    # The approver sees the evidence they approve.
    assert '✓ no firing alert matches severity="critical", env="prd"' in reply.text
    gated.say("carol", "deploy-prd", "approve")
    run_worker(redis)
    assert RequestStore(redis).state(reply.request_id) is RequestState.PUSHED
    assert origin.count() == 2


def test_another_environments_alert_or_a_warning_does_not_block(
    gated: Chat, alertmanager: Alertmanager
) -> None:
    alertmanager.fire(alertname="HighErrorRate", severity="critical", env="int")
    alertmanager.fire(alertname="SlowPages", severity="warning", env="prd")
    reply = gated.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert reply.request_id, reply.text


def test_an_alert_that_fires_after_the_approval_stops_the_commit(
    gated: Chat, alertmanager: Alertmanager, origin: Remote, redis: Redis
) -> None:
    reply = gated.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    gated.say("carol", "deploy-prd", "approve")
    alertmanager.fire(
        "Pods crash looping", alertname="CrashLooping", severity="critical", env="prd"
    )
    run_worker(redis)
    assert RequestStore(redis).state(str(reply.request_id)) is RequestState.FAILED
    [told] = outbox(redis)
    assert "prd has a firing alert: CrashLooping: Pods crash looping" in told, told
    assert origin.count() == 1


def test_a_rollback_goes_through_while_an_alert_fires(
    gated: Chat, alertmanager: Alertmanager, origin: Remote, redis: Redis
) -> None:
    gated.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    gated.say("carol", "deploy-prd", "approve")
    run_worker(redis)
    assert origin.count() == 2
    alertmanager.fire(
        "Error rate above 5%", alertname="HighErrorRate", severity="critical", env="prd"
    )
    reply = gated.say("alice", "deploy-prd", "rollback awesome in prd")
    assert reply.request_id, reply.text
    gated.say("carol", "deploy-prd", "approve")
    run_worker(redis)
    assert RequestStore(redis).state(reply.request_id) is RequestState.PUSHED
    assert "newTag: 2.0.0" in origin.file("env/prd/kustomization.yml").decode()


@pytest.mark.parametrize("required", [True, False])
def test_an_alertmanager_that_cannot_be_asked_blocks_unless_not_required(
    required: bool, policy_file: Path, redis: Redis, settings: Settings
) -> None:
    from bot.embedded_redis import free_port

    nobody = f"http://127.0.0.1:{free_port()}"
    chat = chat_with(policy_file, redis, settings, alerts_gate(nobody, required))
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    if required:
        assert reply.reason == "alerts_unknown", reply.text
        assert "cannot reach Alertmanager" in reply.text
    else:
        assert reply.request_id, reply.text


def freeze(start: datetime, end: datetime, reason: str) -> str:
    fmt = "%Y-%m-%d %H:%M"
    return (
        f"    freezes:\n      - {{from: '{start.strftime(fmt)}', to: '{end.strftime(fmt)}', "
        f"tz: UTC, reason: {reason}}}\n"
    )


def test_a_freeze_covering_now_refuses_naming_it_and_status_shows_it(
    policy_file: Path, redis: Redis, settings: Settings, origin: Remote
) -> None:
    now = datetime.now(UTC)
    chat = chat_with(
        policy_file,
        redis,
        settings,
        freeze(now - timedelta(hours=1), now + timedelta(days=2), "holidays"),
    )
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert reply.reason == "freeze", reply.text
    ends = (now + timedelta(days=2)).strftime("%Y-%m-%d %H:%M")
    assert reply.text == (
        f"prd is frozen for holidays until {ends} UTC; nothing deploys there until then "
        "(break-glass aside)"
    )
    assert "❄️ prd frozen: " in chat.say("bob", "deploy-prd", "status prd").text
    assert redis.keys("releasegate:request:*") == []
    assert origin.count() == 1


def test_a_past_freeze_refuses_nothing_and_an_upcoming_one_is_shown(
    policy_file: Path, redis: Redis, settings: Settings
) -> None:
    now = datetime.now(UTC)
    past = freeze(now - timedelta(days=3), now - timedelta(days=2), "last week")
    ahead = freeze(now + timedelta(days=5), now + timedelta(days=6), "release party").replace(
        "    freezes:\n", ""
    )
    chat = chat_with(policy_file, redis, settings, past + ahead)
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert reply.request_id, reply.text
    status = chat.say("bob", "deploy-prd", "status prd").text
    assert "❄️ prd freeze ahead: " in status
    assert "release party" in status
    assert "last week" not in status


def test_lock_all_locks_every_environment_the_person_may_lock_and_unlock_all_frees_them(
    chat: Chat,
) -> None:
    reply = chat.say("carol", "deploy-prd", "lock all incident 42")
    assert reply.text.startswith("🔒 int, prd locked by carol: incident 42"), reply.text
    refused = chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int")
    assert refused.reason == "locked", refused.text
    # alice may lock int only (prd's lockers are its approvers): hers finds int locked.
    mine = chat.say("alice", "deploy-int", "lock all").text
    assert mine.startswith("🔒 nothing newly locked\n(already: int is locked by carol"), mine
    assert "prd" not in mine
    freed = chat.say("carol", "deploy-prd", "unlock all over")
    assert freed.text == "🔓 int, prd unlocked by carol: over"
    assert chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int").ok


def test_break_glass_lands_while_an_alert_fires(
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    alertmanager: Alertmanager,
    origin: Remote,
) -> None:
    oncall = "    break_glass: ['shell:alice']\n"
    chat = chat_with(policy_file, redis, settings, alerts_gate(alertmanager.url) + oncall)
    alertmanager.fire("Checkout down", alertname="CheckoutDown", severity="critical", env="prd")
    assert chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").reason == "alert"
    reply = chat.say("alice", "deploy-prd", "deploy! awesome 2.1.0 to prd reason the fix for it")
    assert reply.request_id, reply.text
    run_worker(redis)
    assert RequestStore(redis).state(reply.request_id) is RequestState.PUSHED
    assert "Break-Glass: the fix for it\n" in origin.message()


def test_an_alertmanager_that_answers_too_slowly_is_cut_at_its_bound(
    policy_file: Path, redis: Redis, settings: Settings
) -> None:
    """An Alertmanager that takes 8 s is not waited for: the refusal comes at the gate's
    bound (5 s), saying why, well before the answer would have."""
    import http.server
    import threading
    import time

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(8)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        chat = chat_with(policy_file, redis, settings, alerts_gate(url))
        started = time.monotonic()
        reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
        took = time.monotonic() - started
    finally:
        server.shutdown()
    assert reply.reason == "alerts_unknown", reply.text
    assert took < 8, f"{took:.1f}s: the gate waited for the slow answer"
