"""The bot's HTTP endpoints for Kubernetes and Prometheus, and what logs may contain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from redis import Redis

from bot.conversation import Conversation
from bot.server import create_app
from config.policy import Policy
from config.settings import Settings
from config.text import inert
from tests.conftest import Chat, Remote, eventually, http_server, outbox, run_worker
from workers.git.mirrors import Mirrors


def app_for(settings: Settings, policy: Policy, redis: Redis):  # type: ignore[no-untyped-def]
    checkout = Mirrors.of(policy, settings.workdir, freshness=0)
    return create_app(settings, policy, redis, Conversation(policy, redis, checkout))


def test_healthz_and_readyz_answer_when_redis_does(
    settings: Settings, policy: Policy, redis: Redis
) -> None:
    with http_server(app_for(settings, policy, redis)) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        ready = ready_within(url, 10)
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        assert ready.json()["apps"] == 1


def ready_within(url: str, seconds: float) -> httpx.Response:
    """/readyz once it says ready, or its last answer after `seconds`."""
    deadline = time.monotonic() + seconds
    while (ready := httpx.get(f"{url}/readyz")).status_code != 200:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return ready


def test_readyz_stays_503_until_the_first_fetch_brought_a_head(
    settings: Settings, policy: Policy, redis: Redis, remote: Path
) -> None:
    """Traffic starts when a pod can answer: every answer reads Git. /healthz stays 200."""
    away = remote.with_name("not-yet.git")
    remote.rename(away)
    with http_server(app_for(settings, policy, redis)) as url:
        for _ in range(3):
            ready = httpx.get(f"{url}/readyz")
            assert ready.status_code == 503
            assert ready.json() == {"status": "git: first fetch"}
            assert httpx.get(f"{url}/healthz").status_code == 200
            time.sleep(0.2)
        away.rename(remote)  # the remote answers now: the next look fetches
        assert ready_within(url, 10).json()["status"] == "ready"


def test_readyz_fails_when_redis_is_unreachable(settings: Settings, policy: Policy) -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    with http_server(app_for(settings, policy, unreachable)) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "redis unreachable"}


def test_slack_events_answer_404_when_slack_is_not_configured(
    settings: Settings, policy: Policy, redis: Redis
) -> None:
    with http_server(app_for(settings, policy, redis)) as url:
        assert httpx.post(f"{url}/slack/events", content="{}").status_code == 404


def test_metrics_count_requests_refusals_approvals_deploys_and_the_queue(
    settings: Settings, policy: Policy, redis: Redis, chat: Chat, origin: Remote
) -> None:
    chat.say("mallory", "deploy-prd", "deploy awesome 2.1.0 to prd")
    request_id = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    chat.say("carol", "deploy-prd", f"approve {request_id}")
    with http_server(app_for(settings, policy, redis)) as url:
        before = httpx.get(f"{url}/metrics").text
        run_worker(redis)
        after = httpx.get(f"{url}/metrics").text
    assert 'releasegate_chat_requests_total{platform="shell",verb="deploy"}' in before
    assert 'releasegate_refusals_total{reason="not_deployer"}' in before
    assert "releasegate_approvals_total" in before
    assert "releasegate_queue_depth 1.0" in before
    assert "releasegate_queue_depth 0.0" in after
    assert 'releasegate_deploys_total{env="prd",outcome="pushed"} 1.0' in after
    assert 'releasegate_deploy_duration_seconds_bucket{le="+Inf"} 1.0' in after
    assert "releasegate_deploy_duration_seconds_count 1.0" in after
    assert "releasegate_push_retries_total 0.0" in after


def test_worker_logs_are_json_lines_with_the_request_and_no_token(
    tmp_path: Path,
    redis_server,
    chat: Chat,
    policy_file: Path,
    redis: Redis,  # type: ignore[no-untyped-def]
) -> None:
    request_id = chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int").request_id
    # The worker will fetch from a URL with a token in it, which fails: neither
    # its log nor the chat may show the token.
    text = policy_file.read_text()
    url_line = next(line for line in text.splitlines() if line.strip().startswith("url:"))
    policy_file.write_text(
        text.replace(url_line, '  url: "https://ci:s3cr3t-t0ken@127.0.0.1:1/env.git"')
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")},
        "RELEASEGATE_POLICY": str(policy_file),
        "RELEASEGATE_REDIS_URL": redis_server.url,
        "RELEASEGATE_WORKDIR": str(tmp_path / "w"),
        "RELEASEGATE_LOG_FORMAT": "json",
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "worker", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    # From the moment RQ starts the job, every line of ours is about the request.
    start = next(
        i
        for i, line in enumerate(lines)
        if line["logger"] == "rq.worker" and request_id in line["message"]
    )
    ours = [line for line in lines[start:] if line["logger"].startswith("workers.")]
    assert ours, done.stderr
    for line in ours:
        assert line["request_id"] == request_id
        assert line["env"] == "int"
        assert line["app"] == "awesome"
        assert line["actor"] == "shell:alice"
    assert "s3cr3t-t0ken" not in done.stderr
    report = outbox(redis)
    assert report
    # The password is masked (its user stays), and the thread says the URL inert.
    assert (
        f"failed: cannot fetch main from {inert('https://ci:***@127.0.0.1:1/env.git')}" in report[0]
    )
    assert "s3cr3t-t0ken" not in report[0]


@pytest.fixture
def webhook_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Rocket.Chat's webhook configured (its API need not answer for these tests)."""
    for name, value in {
        "URL": "http://127.0.0.1:1",
        "USER_ID": "bot",
        "TOKEN": "t",
        "WEBHOOK_TOKEN": "hook",
        "POLL": "false",
    }.items():
        monkeypatch.setenv(f"RELEASEGATE_ROCKETCHAT_{name}", value)
    return Settings()


def test_a_body_over_the_limit_is_refused_before_it_is_read(
    webhook_settings: Settings, policy: Policy, redis: Redis
) -> None:
    with http_server(app_for(webhook_settings, policy, redis)) as url:
        declared = httpx.post(f"{url}/slack/events", content=b"x" * (1024 * 1024 + 1))
        assert declared.status_code == 413

        def stream():  # no Content-Length: counted while it arrives
            for _ in range(40):
                yield b"y" * 65536

        streamed = httpx.post(f"{url}/rocketchat/webhook", content=stream())
        assert streamed.status_code == 413
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_malformed_webhook_bodies_get_400_not_a_traceback(
    webhook_settings: Settings, policy: Policy, redis: Redis
) -> None:
    with http_server(app_for(webhook_settings, policy, redis)) as url:
        hook = f"{url}/rocketchat/webhook"
        nested = "[" * 100_000 + "]" * 100_000
        for body in (b"\xff\xfe not utf-8", b"{not json", nested.encode()):
            answer = httpx.post(hook, content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 400, body[:20]
            assert answer.json() == {"error": "expected JSON"}


def test_serve_starts_while_slack_is_unreachable_and_readyz_says_so(
    settings: Settings, policy: Policy, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELEASEGATE_SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("RELEASEGATE_SLACK_SIGNING_SECRET", "secret")
    monkeypatch.setenv("RELEASEGATE_SLACK_API_URL", "http://127.0.0.1:1/api/")
    with http_server(app_for(Settings(), policy, redis)) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        # Not ready while the first fetch runs either; what is asked is that Slack is named.
        assert eventually(
            lambda: "slack-api" in httpx.get(f"{url}/readyz").json().get("loops", {}), 20
        ), "readyz never noticed Slack was unreachable"
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503


def test_metrics_answer_503_while_redis_is_unreachable(settings: Settings, policy: Policy) -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    with http_server(app_for(settings, policy, unreachable)) as url:
        answer = httpx.get(f"{url}/metrics")
        assert answer.status_code == 503
        assert answer.json() == {"error": "Redis unreachable"}
