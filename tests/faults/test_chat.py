"""Slack and Rocket.Chat failing: rate limits, server errors, outages. Every outcome is posted
once when chat is back, and a request waiting in Rocket.Chat is approved once it is back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from redis import Redis

from bot.platforms.rocketchat_api import RocketChatPoster
from bot.platforms.slack_api import SlackPoster
from bot.platforms.slack_standin import FakeSlack, serve
from bot.reports import GROUP, OutboxConsumer
from config.errors import ReleasegateError
from config.settings import Settings
from tests.conftest import Chat, Remote, eventually, run_worker
from tests.fake_rocketchat import BOT_ID
from tests.test_rocketchat import RC_POLICY, RocketWorld, rocket_world
from tests.test_rocketchat import serve as serve_rocketchat
from workers.state.outbox import stream
from workers.state.request import RequestState
from workers.state.store import RequestStore
from workers.supervisor import Supervisor


def test_slack_rate_limiting_failing_and_gone_gets_every_outcome_posted_exactly_once(
    chat: Chat, redis: Redis, settings: Settings
) -> None:
    ids = [str(chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int").request_id)]
    run_worker(redis)
    ids.append(str(chat.say("alice", "deploy-int", "deploy awesome 2.1.1 to int").request_id))
    run_worker(redis)
    store = RequestStore(redis)
    assert [store.state(i) for i in ids] == [RequestState.PUSHED] * 2

    fake = FakeSlack()
    server = serve(fake)
    port = server.server_port
    server.shutdown()
    server.server_close()  # Slack is gone
    poster = SlackPoster("xoxb-test", f"http://127.0.0.1:{port}/api/")
    consumer = OutboxConsumer(redis, "shell", poster, name="bot-a", retry_idle=timedelta(0))
    assert consumer.run_once() == 0
    assert all(store.is_unreported(i) for i in ids)

    # Back, but rate limiting, then failing with 503s, then well.
    fake.rate_limit["chat.postMessage"] = 2
    fake.unavailable["chat.postMessage"] = 3
    server = serve(fake, port)
    try:
        deadline = time.monotonic() + 30
        while redis.xpending(stream("shell"), GROUP)["pending"]:
            assert time.monotonic() < deadline, fake.calls
            consumer.run_once()
    finally:
        server.shutdown()
        server.server_close()
    posted = fake.texts()
    for request_id in ids:
        assert sum(text.startswith(f"{request_id}: pushed ") for text in posted) == 1, posted
        assert not store.is_unreported(request_id)
    assert any(call.method.endswith("(rate limited)") for call in fake.calls)
    assert any(call.method.endswith("(unavailable)") for call in fake.calls)


@pytest.fixture
def rocket(
    redis: Redis,
    remote: Path,
    settings: Settings,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RocketWorld]:
    with rocket_world(
        RC_POLICY.format(url=remote.as_uri()), redis, policy_file, monkeypatch
    ) as world:
        yield world


def test_rocketchat_down_while_a_request_waits_then_its_approval_counts_once_it_is_back(
    rocket: RocketWorld, redis: Redis, origin: Remote
) -> None:
    rocket.webhook("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    request_id, card = rocket.card()
    port = rocket.api.server_port
    rocket.api.shutdown()
    rocket.api.server_close()
    rocket.fake.react("carol", card, "white_check_mark")  # in Rocket.Chat, which we cannot reach

    supervisor, stop = Supervisor(), threading.Event()

    def poll_round() -> float:
        rocket.adapter.poll_round(False)
        return 0.2  # rounds close together, to keep the test short

    supervisor.start("rocketchat-poller", poll_round, stop)
    try:
        assert eventually(lambda: "rocketchat-poller" in supervisor.down(), 15, every=0.1), (
            "the poller never said it was down"
        )
        assert rocket.store.state(request_id) is RequestState.PENDING
        with pytest.raises(ReleasegateError):  # a clear error, no approval from nowhere
            rocket.adapter.poll_once(messages_too=False)

        rocket.api = serve_rocketchat(rocket.fake, port)
        assert eventually(
            lambda: rocket.store.state(request_id) is not RequestState.PENDING, 90, every=0.2
        ), supervisor.down()  # the poller backs off while it is down
        # And the poller is well again: a round ends without an error (one that met the
        # restarting stand-in is followed by a good one).
        assert eventually(lambda: "rocketchat-poller" not in supervisor.down(), 30, every=0.1), (
            supervisor.down()
        )
    finally:
        stop.set()
    run_worker(redis)
    poster = RocketChatPoster(f"http://127.0.0.1:{port}", BOT_ID, "rc-token", backoff=0.01)
    OutboxConsumer(redis, "rocketchat", poster, name="bot-a").run_once()
    thread = [m["msg"] for m in rocket.fake.posted() if m.get("tmid") == card]
    assert sum(text.startswith(f"{request_id}: pushed ") for text in thread) == 1, thread
    assert sum("approved by carol" in text for text in thread) == 1, thread
    assert origin.count() == 2
