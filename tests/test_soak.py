"""Soak: prd takes what int has run long enough (with the evidence int's soak counts), the
clock restarts when int moves away and back, and `auto_promote` files the promotion itself
once when the soak ends, whichever bot replica gets the news."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from redis import Redis

from bot.cards import Card
from bot.conversation import Conversation
from bot.reports import OutboxConsumer
from bot.telling import post_promotion
from config.policy import parse_policy
from config.settings import Settings
from tests.conftest import Chat, run_worker, single_policy
from workers.git.mirrors import Mirrors
from workers.rollout import verify
from workers.state.request import RequestState
from workers.state.store import RequestStore
from workers.state.verdicts import Verdicts

TRAIN = "    promote_from: int\n"


class Recorder:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def post(self, channel: str, thread: str | None, text: str) -> str:
        self.texts.append(text)
        return f"m{len(self.texts)}"

    def update_card(self, channel: str, ref: str, card: Card) -> None:
        pass


def chat_with(tmp_path: Path, remote: Path, redis: Redis, policy_file: Path, extra: str) -> Chat:
    text = single_policy(remote)
    assert TRAIN in text
    policy_file.write_text(text.replace(TRAIN, TRAIN + extra))
    policy = parse_policy(policy_file.read_text())
    mirrors = Mirrors.of(policy, tmp_path / f"bot-{time.monotonic_ns()}", freshness=0)
    return Chat(Conversation(policy, redis, mirrors))


def land_in_int(chat: Chat, redis: Redis, version: str) -> None:
    reply = chat.say("alice", "deploy-int", f"deploy awesome {version} to int")
    assert reply.request_id is not None, reply.text
    run_worker(redis)
    assert RequestStore(redis).state(reply.request_id) is RequestState.PUSHED


def test_a_promotion_is_refused_until_the_soak_ends_and_the_clock_restarts_when_int_moves(
    tmp_path: Path, remote: Path, redis: Redis, settings: Settings, policy_file: Path
) -> None:
    chat = chat_with(tmp_path, remote, redis, policy_file, "    soak: 30m\n")
    land_in_int(chat, redis, "2.1.0-rc1")
    first = Verdicts(redis).running("int", "awesome")
    assert first is not None
    assert (first.version, first.evidence) == ("2.1.0-rc1", "pushed")
    since = datetime.fromtimestamp(first.since, UTC)
    ctx = chat.conversation.ctx
    ctx.clock = lambda: since + timedelta(minutes=10)
    refused = chat.say("alice", "deploy-prd", "deploy production")
    assert not refused.ok
    eligible = (since + timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert "awesome 2.1.0-rc1 has soaked in int for 10m 00s of 30m 00s" in refused.text
    assert f"it is eligible for prd at {eligible}" in refused.text
    # int moves away and back: the clock starts again from the second landing.
    time.sleep(1.1)
    land_in_int(chat, redis, "2.1.1-rc1")
    land_in_int(chat, redis, "2.1.0-rc1")
    again = Verdicts(redis).running("int", "awesome")
    assert again is not None
    assert again.since > first.since + 1
    restarted = datetime.fromtimestamp(again.since, UTC) + timedelta(minutes=30)
    ctx.clock = lambda: since + timedelta(minutes=30, seconds=0.5)
    refused = chat.say("alice", "deploy-prd", "deploy production")
    assert not refused.ok
    assert f"eligible for prd at {restarted.strftime('%Y-%m-%d %H:%M:%S UTC')}" in refused.text
    ctx.clock = lambda: restarted + timedelta(seconds=1)
    asked = chat.say("alice", "deploy-prd", "deploy production")
    assert asked.ok, asked.text
    assert asked.request_id is not None


def test_a_direct_deploy_waits_for_the_soak_too(
    tmp_path: Path, remote: Path, redis: Redis, settings: Settings, policy_file: Path
) -> None:
    chat = chat_with(tmp_path, remote, redis, policy_file, "    soak: 30m\n")
    land_in_int(chat, redis, "2.1.0")
    refused = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert not refused.ok
    assert "has soaked in int for" in refused.text


def test_auto_promote_files_the_promotion_once_with_two_bot_replicas(
    tmp_path: Path, remote: Path, redis: Redis, settings: Settings, policy_file: Path
) -> None:
    extra = "    soak: 30m\n    auto_promote: true\n"
    replicas = [chat_with(tmp_path, remote, redis, policy_file, extra) for _ in range(2)]
    land_in_int(replicas[0], redis, "2.1.0-rc1")
    running = Verdicts(redis).running("int", "awesome")
    assert running is not None
    # Times are the soak clock's, not the machine's: a loaded machine cannot end it early.
    soaked = running.since + 30 * 60
    assert verify.promote_due(redis, now=soaked - 1) == 0  # the soak has not ended
    assert verify.promote_due(redis, now=soaked + 1) == 1
    assert verify.promote_due(redis, now=soaked + 2) == 0  # handed out once, whoever asks
    for chat in replicas:
        chat.conversation.ctx.clock = lambda: datetime.fromtimestamp(soaked + 2, UTC)
    recorders = [Recorder(), Recorder()]
    consumers = [
        OutboxConsumer(
            redis,
            "shell",
            recorder,
            name=f"bot-{n}",
            offer_promotion=chat.conversation.offer_promotion,
        )
        for n, (chat, recorder) in enumerate(zip(replicas, recorders, strict=True))
    ]
    threads = [threading.Thread(target=c.run_once) for c in consumers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store = RequestStore(redis)
    pending = [store.get(i) for i in store.pending_all()]
    assert [(r.env, r.verb, [c.line() for c in r.changes]) for r in pending] == [
        ("prd", "promote", ["awesome: 2.0.0 -> 2.1.0 (prd)"])
    ]
    assert pending[0].requester == "shell:alice"  # who deployed it to int
    cards = [t for r in recorders for t in r.texts if t.startswith("*")]
    assert len(cards) == 1
    assert pending[0].id in cards[0]
    # The same news again (a redelivery) files and posts nothing more.
    fields = {"kind": "promote", "env": "prd", "app": "awesome", "version": "2.1.0-rc1"}
    post_promotion(store, recorders[0], {**fields, "channel": "shell:deploy-prd"}, None)
    offer = replicas[1].conversation.offer_promotion
    post_promotion(store, recorders[1], {**fields, "channel": "shell:deploy-prd"}, offer)
    assert len(store.pending_all()) == 1
    assert len([t for r in recorders for t in r.texts if t.startswith("*")]) == 1
