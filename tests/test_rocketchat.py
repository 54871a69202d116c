"""Rocket.Chat end to end: webhook calls into our real HTTP server, polling rounds against a
local stand-in for Rocket.Chat's REST API, a real Redis, a real Git remote and a real worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from bot.conversation import Conversation
from bot.executor import BoundedExecutor
from bot.platforms.rocketchat import RocketChatAdapter
from bot.platforms.rocketchat_api import RateLimited, RocketChatPoster
from bot.reports import OutboxConsumer
from bot.server import create_app
from config.errors import PostFailed
from config.policy import parse_policy
from config.settings import Settings
from tests.conftest import Remote, eventually, http_server, run_worker
from tests.fake_rocketchat import BOT_ID, FakeRocketChat, serve
from workers.git.mirrors import Mirrors
from workers.state.request import RequestState
from workers.state.store import RequestStore

WEBHOOK_TOKEN = "whk-0123456789"

RC_POLICY = """
repository: {{url: "{url}", author: "releasegate <rg@example.invalid>"}}
groups:
  developers: ["rocketchat:alice", "rocketchat:bob"]
  release-managers: ["rocketchat:carol", "rocketchat:id-dave"]
environments:
  int:
    channels: ["rocketchat:deploy-int"]
    deployers: ["group:developers"]
  prd:
    channels: ["rocketchat:deploy-prd"]
    deployers: ["group:developers"]
    approvers: ["group:release-managers"]
    approvals: 1
apps:
  awesome:
    pins:
      int: [{{file: env/int/kustomization.yml, kustomize_image: bespinian/awesome-image}}]
      prd: [{{file: env/prd/kustomization.yml, kustomize_image: bespinian/awesome-image}}]
"""


class RocketWorld:
    def __init__(
        self,
        url: str,
        fake: FakeRocketChat,
        redis: Redis,
        adapter: RocketChatAdapter,
        api: ThreadingHTTPServer,
        chat_work: BoundedExecutor,
    ) -> None:
        self.url = url
        self.chat_work = chat_work
        self.fake = fake
        self.redis = redis
        self.adapter = adapter
        self.store = RequestStore(redis)
        self._cards: set[str] = set()
        self.api = api  # the stand-in's HTTP server (a test may stop it and start another)

    def settle(self) -> None:
        """Wait until the server has done the work its webhook answers handed on."""
        assert self.chat_work.wait_idle(), "the server's chat work did not finish"

    def webhook(
        self,
        username: str,
        room: str,
        text: str,
        tmid: str | None = None,
        token: str | None = WEBHOOK_TOKEN,
        message_id: str | None = None,
        user_name: str | None = None,
    ) -> httpx.Response:
        """A person writes; Rocket.Chat's outgoing webhook tells us (`user_name` forges the
        name field, which only a hostile sender would)."""
        message = self.fake.say(username, room, text, tmid)
        payload: dict[str, Any] = {
            "channel_id": message["rid"],
            "channel_name": room,
            "message_id": message_id or message["_id"],
            "timestamp": message["ts"],
            "user_id": message["u"]["_id"],
            "user_name": user_name or username,
            "text": text,
            "siteUrl": "https://chat.acme.example",
            "bot": False,
        }
        if token is not None:
            payload["token"] = token
        if tmid:
            payload["tmid"] = tmid
        return httpx.post(f"{self.url}/rocketchat/webhook", json=payload, timeout=10)

    def card(self) -> tuple[str, str]:
        """(request id, card message id) of the next request card posted."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for message in self.fake.posted():
                channel = f"rocketchat:{room_of(self.fake, message)}"
                request_id = self.store.request_for_message(channel, message["_id"])
                if request_id and message["_id"] not in self._cards:
                    self._cards.add(message["_id"])
                    return request_id, message["_id"]
            time.sleep(0.02)
        raise AssertionError(f"no new request card among {self.fake.posted()}")


def room_of(fake: FakeRocketChat, message: dict[str, Any]) -> str:
    return next(name for name, rid in fake.rooms.items() if rid == message["rid"])


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


@contextmanager
def rocket_world(
    policy_text: str, redis: Redis, policy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RocketWorld]:
    """Our server with Rocket.Chat configured, the stand-in, and `policy_text` in force."""
    fake = FakeRocketChat()
    server = serve(fake)
    url = f"http://127.0.0.1:{server.server_port}"
    policy_file.write_text(policy_text)
    for name, value in {
        "URL": url,
        "USER_ID": BOT_ID,
        "TOKEN": "rc-token",
        "WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "POLL": "false",
    }.items():
        monkeypatch.setenv(f"RELEASEGATE_ROCKETCHAT_{name}", value)
    settings = Settings()
    policy = parse_policy(policy_file.read_text())
    conversation = Conversation(policy, redis, Mirrors.of(policy, settings.workdir, freshness=0))
    poster = RocketChatPoster(url, BOT_ID, "rc-token", backoff=0.01)
    adapter = RocketChatAdapter(conversation, poster, redis, BOT_ID)
    for name in ("alice", "bob", "carol", "dave", "erin", "mallory"):
        fake.id_of(name)
    assert adapter.resolve_policy_ids() == []
    app = create_app(settings, policy, redis, conversation)
    with http_server(app) as base:
        world = RocketWorld(base, fake, redis, adapter, server, app.state.chat_work)
        yield world
    world.api.shutdown()
    world.api.server_close()


def test_a_message_in_a_deployment_channel_posts_a_request_card(rocket: RocketWorld) -> None:
    assert rocket.webhook("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").status_code == 200
    request_id, card_id = rocket.card()
    card = next(m for m in rocket.fake.posted() if m["_id"] == card_id)
    assert card["rid"] == "RPRD"
    assert card["msg"].startswith(f"*Deploy awesome 2.1.0 to prd ({request_id})*")
    assert "requested by alice; approvals 0/1: nobody" in card["msg"]
    assert rocket.store.state(request_id) is RequestState.PENDING


def test_an_approval_reaction_is_polled_queued_pushed_and_reported_in_the_thread(
    rocket: RocketWorld, redis: Redis, origin: Remote
) -> None:
    rocket.webhook("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    request_id, card = rocket.card()
    rocket.fake.react("carol", card, "white_check_mark")
    assert rocket.adapter.poll_once(messages_too=False) == 1  # one history call for one channel
    assert rocket.store.state(request_id) is RequestState.APPROVED
    [said] = [m for m in rocket.fake.posted() if m.get("tmid") == card]
    assert said["msg"] == f"{request_id} approved by carol (1/1); queued"
    run_worker(redis)
    assert rocket.store.state(request_id) is RequestState.PUSHED
    # The bot's outbox consumer runs in the server: it posts the outcome, then edits the card.
    pushed = f"🚀 pushed: {origin.head()[:7]}"

    def card_text() -> str:
        return str(next(m for m in rocket.fake.messages if m["_id"] == card)["msg"])

    assert eventually(lambda: pushed in card_text(), 15, every=0.05), card_text()
    thread = [m["msg"] for m in rocket.fake.posted() if m.get("tmid") == card]
    assert thread[-1] == f"{request_id}: pushed {origin.head()[:7]}: awesome: 2.0.0 -> 2.1.0 (prd)"
    assert "approvals 1/1: @carol" in card_text()  # addressed by name, decided by id
    assert "Approved-by: rocketchat:id-carol" in origin.message()


def test_a_user_id_principal_matches_through_the_webhook(rocket: RocketWorld) -> None:
    rocket.webhook("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    request_id, card = rocket.card()
    rocket.webhook("dave", "deploy-prd", "approve", tmid=card)
    assert eventually(
        lambda: rocket.store.state(request_id) is not RequestState.PENDING, 10, every=0.05
    )
    assert rocket.store.approvals(request_id) == ["rocketchat:id-dave"]


def test_reactions_by_the_requester_or_a_non_approver_do_not_count_and_are_told_once(
    rocket: RocketWorld,
) -> None:
    rocket.webhook("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    request_id, card = rocket.card()
    rocket.fake.react("alice", card, "white_check_mark")
    rocket.fake.react("bob", card, "+1")
    rocket.adapter.poll_once(messages_too=False)
    rocket.adapter.poll_once(messages_too=False)  # the same reactions, seen again
    told = sorted(m["msg"] for m in rocket.fake.posted() if m.get("tmid") == card)
    assert told == [
        f"@alice the requester cannot approve their own request {request_id}",
        "@bob bob may not approve deploys to prd; approvers: group:release-managers",
    ]
    assert rocket.store.approvals(request_id) == []
    assert rocket.store.state(request_id) is RequestState.PENDING


def test_a_reject_reaction_ends_the_request(rocket: RocketWorld) -> None:
    rocket.webhook("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    request_id, card = rocket.card()
    rocket.fake.react("carol", card, "x")
    rocket.adapter.poll_once(messages_too=False)
    assert rocket.store.state(request_id) is RequestState.REJECTED


@pytest.mark.parametrize(("token", "status"), [(None, 401), ("", 401), ("whk-wrong", 403)])
def test_a_webhook_without_the_right_token_is_refused_and_changes_nothing(
    rocket: RocketWorld, origin: Remote, token: str | None, status: int
) -> None:
    response = rocket.webhook("alice", "deploy-prd", "deploy awesome 2.1.0 to prd", token=token)
    assert response.status_code == status
    rocket.settle()
    assert rocket.fake.posted() == []
    assert rocket.redis.keys("releasegate:request:*") == []
    assert origin.count() == 1


def test_a_replayed_webhook_is_handled_once(rocket: RocketWorld) -> None:
    rocket.webhook("alice", "deploy-prd", "deploy awesome 2.1.0 to prd", message_id="same")
    rocket.card()
    rocket.webhook("alice", "deploy-prd", "deploy awesome 2.1.0 to prd", message_id="same")
    rocket.settle()
    assert len(rocket.fake.posted()) == 1
    assert len(rocket.store.pending_all()) == 1


def test_messages_from_the_bot_itself_and_chatter_are_ignored(rocket: RocketWorld) -> None:
    rocket.adapter.on_message(
        BOT_ID, "releasegate", "deploy-prd", "deploy awesome 2.1.0 to prd", "b1", None
    )
    rocket.webhook("alice", "deploy-prd", "lunch?")
    rocket.webhook("alice", "random", "deploy awesome 2.1.0 to prd")
    rocket.settle()
    assert rocket.fake.posted() == []


def test_a_mention_outside_deployment_channels_is_a_command(rocket: RocketWorld) -> None:
    rocket.fake.rooms["random"] = "RRAND"
    rocket.webhook("bob", "random", "@releasegate status prd")
    [answer] = rocket.fake.wait_for_posts(1)
    assert answer["msg"].startswith("awesome: prd 2.0.0\n")


def test_polling_mode_reads_new_messages_once_across_restarts(rocket: RocketWorld) -> None:
    rocket.fake.say("alice", "deploy-int", "deploy awesome 1.9.0 to int")  # before we started
    assert rocket.adapter.poll_messages("rocketchat:deploy-int") == 0  # the cursor starts here
    rocket.fake.say("alice", "deploy-int", "deploy awesome 2.1.0 to int")
    rocket.fake.say("bob", "deploy-int", "status int")
    assert rocket.adapter.poll_messages("rocketchat:deploy-int") == 2
    restarted = RocketChatAdapter(
        rocket.adapter.conversation, rocket.adapter.poster, rocket.redis, BOT_ID
    )
    assert restarted.poll_messages("rocketchat:deploy-int") == 0
    rocket.fake.say("bob", "deploy-int", "status")
    assert restarted.poll_messages("rocketchat:deploy-int") == 1
    posted = [m["msg"] for m in rocket.fake.posted()]
    assert len(posted) == 3
    assert posted[0].startswith("*Deploy awesome 2.1.0 to int (R")
    assert "✅ approved; queued" in posted[0]
    assert "1.9.0" not in " ".join(posted)


def test_a_busy_channel_is_read_back_to_the_cursor_without_losing_a_message(
    rocket: RocketWorld,
) -> None:
    assert rocket.adapter.poll_messages("rocketchat:deploy-int") == 0  # the cursor starts here
    rocket.fake.say("bob", "deploy-int", "status awesome")  # the one command, oldest of all
    for n in range(250):  # more than two pages of chatter since the last round
        rocket.fake.say("alice", "deploy-int", f"chatter {n}")
    assert rocket.adapter.poll_messages("rocketchat:deploy-int") == 1
    assert any(m["msg"].startswith("awesome: int 2.0.0") for m in rocket.fake.posted())
    assert len(rocket.fake.called("channels.history")) == 1 + 3


def test_an_approval_reaction_refused_while_locked_counts_once_the_lock_is_gone(
    rocket: RocketWorld,
) -> None:
    rocket.webhook("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    request_id, card = rocket.card()
    rocket.webhook("carol", "deploy-prd", "lock prd change freeze")
    rocket.fake.wait_for_posts(2)
    rocket.fake.react("dave", card, "white_check_mark")
    rocket.adapter.poll_once(messages_too=False)
    rocket.adapter.poll_once(messages_too=False)  # the same reaction, the same lock
    refusals = [m for m in rocket.fake.posted() if m["msg"].startswith("@dave prd is locked")]
    assert len(refusals) == 1  # said once
    assert rocket.store.state(request_id) is RequestState.PENDING
    rocket.webhook("carol", "deploy-prd", "unlock prd")
    rocket.fake.wait_for_posts(4)
    rocket.adapter.poll_once(messages_too=False)
    assert rocket.store.state(request_id) is RequestState.APPROVED
    assert rocket.store.approvals(request_id) == ["rocketchat:id-dave"]


def test_a_rate_limited_poll_is_retried_then_backs_off_without_approving(
    rocket: RocketWorld,
) -> None:
    rocket.webhook("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    request_id, card = rocket.card()
    rocket.fake.react("carol", card, "white_check_mark")
    rocket.fake.rate_limit["channels.history"] = 1
    rocket.adapter.poll_once(messages_too=False)  # waits once, then reads
    assert rocket.store.state(request_id) is RequestState.APPROVED

    rocket.webhook("alice", "deploy-prd", "deploy awesome 2.2.0 to prd")
    second, card2 = rocket.card()
    rocket.fake.react("carol", card2, "white_check_mark")
    rocket.fake.rate_limit["channels.history"] = 10
    with pytest.raises(RateLimited):
        rocket.adapter.poll_once(messages_too=False)
    assert rocket.store.state(second) is RequestState.PENDING
    rocket.fake.rate_limit["channels.history"] = 0
    rocket.adapter.poll_once(messages_too=False)
    assert rocket.store.state(second) is RequestState.APPROVED


def test_nothing_is_polled_while_nothing_waits(rocket: RocketWorld) -> None:
    assert rocket.adapter.poll_once(messages_too=False) == 0
    assert rocket.fake.called("channels.history") == []


def test_an_outcome_rocketchat_refuses_is_kept_and_posted_later(
    rocket: RocketWorld, redis: Redis, settings: Settings
) -> None:
    rocket.webhook("alice", "deploy-int", "deploy awesome 2.1.0 to int")
    request_id, _ = rocket.card()
    rocket.fake.tokens = ("botid", "revoked")  # every call fails with 401
    run_worker(redis)
    assert rocket.store.state(request_id) is RequestState.PUSHED
    assert rocket.store.is_unreported(request_id)
    rocket.fake.tokens = (BOT_ID, "rc-token")
    poster = rocket.adapter.poster
    # Another bot (or this one, RETRY_IDLE later) claims the entry and posts it.
    consumer = OutboxConsumer(redis, "rocketchat", poster, retry_idle=timedelta(0))

    def posted() -> bool:
        consumer.run_once()
        return not rocket.store.is_unreported(request_id)

    assert eventually(posted, 15, every=0.05), "the outcome was never posted"
    assert rocket.fake.posted()[-1]["msg"].startswith(f"{request_id}: pushed ")


def test_a_poster_error_names_the_call() -> None:
    poster = RocketChatPoster("http://127.0.0.1:1", "u", "t", backoff=0.01)
    with pytest.raises(PostFailed, match=r"Rocket\.Chat chat_post_message failed"):
        poster.post("rocketchat:deploy-prd", None, "hello")


def test_serve_polls_for_messages_when_no_webhook_is_set(
    rocket: RocketWorld, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real polling loop in `releasegate serve`: first round sets the cursor, the next reads."""
    monkeypatch.setenv("RELEASEGATE_ROCKETCHAT_POLL", "true")
    monkeypatch.delenv("RELEASEGATE_ROCKETCHAT_WEBHOOK_TOKEN")
    settings = Settings()
    conversation = rocket.adapter.conversation
    with http_server(create_app(settings, conversation.policy, redis, conversation)):
        assert eventually(
            lambda: redis.exists("releasegate:rocketchat:cursor:rocketchat:deploy-int"),
            10,
            every=0.05,
        ), "the poller did not start"
        rocket.fake.say("bob", "deploy-int", "status int")
        [answer] = rocket.fake.wait_for_posts(1, timeout=20)
    assert answer["msg"].startswith("awesome: int 2.0.0\n")


def test_a_bot_accounts_reaction_or_approve_never_counts(
    rocket: RocketWorld, redis: Redis, origin: Remote
) -> None:
    """An approver's account that Rocket.Chat says is a bot (`users.info`: type bot, role
    bot) approves nothing, by ✅ or by word, the same rule as Slack's; nothing is committed."""
    rocket.fake.bots.add(rocket.fake.id_of("carol"))
    before = origin.count()
    rocket.webhook("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    request_id, card = rocket.card()
    rocket.fake.react("carol", card, "white_check_mark")
    rocket.adapter.poll_once(messages_too=False)
    rocket.webhook("carol", "deploy-prd", f"approve {request_id}")
    assert rocket.store.state(request_id) is RequestState.PENDING
    said = [m["msg"] for m in rocket.fake.posted() if "bots never approve" in m["msg"]]
    assert said, rocket.fake.posted()
    run_worker(redis)
    assert origin.count() == before
    assert rocket.store.approvals(request_id) == []
