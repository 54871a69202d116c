"""A write the bot confirms to a person is on a replica first, where replicas exist: with
the replica stopped, the person is told it may not have been recorded, never that it was.
Real servers: a master and a replica (and the sentinels watching them)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from bot.conversation import Conversation
from config.policy import parse_policy
from tests.conftest import Chat
from tests.sentinel import SentinelWorld
from workers.git.mirrors import Mirrors
from workers.state.durability import Durability


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[SentinelWorld]:
    world = SentinelWorld(tmp_path / "redis")
    world.folder.mkdir()
    yield world.start()
    world.stop()


def chat_on(port: int, policy_file: Path, tmp_path: Path) -> Chat:
    policy = parse_policy(policy_file.read_text())
    mirrors = Mirrors.of(policy, tmp_path / "bot", freshness=0)
    return Chat(Conversation(policy, Redis(port=port), mirrors))


def test_with_a_replica_answering_the_person_is_told_what_happened(
    replicated: SentinelWorld, policy_file: Path, tmp_path: Path
) -> None:
    chat = chat_on(replicated.data_ports[0], policy_file, tmp_path)
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert reply.ok, reply.text
    assert reply.request_id
    approved = chat.say("carol", "deploy-prd", "approve")
    assert approved.queued == (reply.request_id,)
    replica = Redis(port=replicated.data_ports[1])
    assert replica.hget(f"releasegate:request:{reply.request_id}", "state") is not None


def test_with_the_replica_silent_the_person_is_warned_and_never_told_it_happened(
    replicated: SentinelWorld, policy_file: Path, tmp_path: Path
) -> None:
    chat = chat_on(replicated.data_ports[0], policy_file, tmp_path)
    asked = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert asked.request_id
    replica = replicated.processes[replicated.data_ports[1]]
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        approved = chat.say("carol", "deploy-prd", f"approve {asked.request_id}")
        assert not approved.ok
        assert approved.queued == ()
        assert approved.text.startswith("⚠️ this may not have been recorded")
        assert f"Check with `status {asked.request_id}`" in approved.text
        locked = chat.say("carol", "deploy-prd", "lock prd incident")
        assert locked.text.startswith("⚠️ this may not have been recorded"), locked.text
        status = chat.say("bob", "deploy-prd", "status prd")
        assert status.ok  # reading waits for nothing
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    assert Durability(Redis(port=replicated.data_ports[0])).confirmed()


class RecordingPoster:
    """What a platform was asked to do: posts, private answers, card refreshes."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def post(self, channel: str, thread: str | None, text: str) -> str:
        self.calls.append(f"post {text}")
        return "m1"

    def ephemeral(
        self, channel: str, user: str, text: str, thread: str | None = None, name: str = ""
    ) -> None:
        self.calls.append(f"ephemeral {text}")

    def post_card(self, channel: str, card: object, thread: str | None = None) -> str:
        self.calls.append("post_card")
        return "card-1"

    def update_card(self, channel: str, ref: str, card: object) -> None:
        self.calls.append("update_card")


def test_an_unconfirmed_approval_leaves_the_card_as_it_was(redis: Redis) -> None:
    """The person is told it may not have been recorded; the card must not say more (it said
    `approvals 1/1 … deploying` from the master's unconfirmed write)."""
    from bot.delivery import deliver
    from bot.events import NOT_CONFIRMED, ChatEvent, Reply
    from workers.state.store import RequestStore

    store = RequestStore(redis)
    store.bind_message("RABCDEF", "slack:CPRD", "t1")  # the reaction was on this card
    poster = RecordingPoster()
    event = ChatEvent(
        platform="slack", user="UCAROL", user_name="carol", channel="CPRD", text="", thread="t1"
    )
    warning = Reply(
        "⚠️ this may not have been recorded", ok=False, reason=NOT_CONFIRMED, about="RABCDEF"
    )
    deliver(store, poster, event, [warning])  # type: ignore[arg-type]
    assert poster.calls == ["ephemeral ⚠️ this may not have been recorded"]
