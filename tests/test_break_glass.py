"""Break-glass: `deploy! APP VERSION to ENV reason TEXT` by an on-call principal lands at
once, during a freeze and while an alert fires, without approvals; the commit says
`Break-Glass: TEXT` and carries no `Approved-by`. The environment's approvers review it
(`review ID` or ✅), never the requester; until then `status` lists it, the gauge counts it
and its channel is reminded once the review is overdue. A developer who is not on call, and
an unsigned image, are refused: nothing committed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from redis import Redis

from bot.context import Context
from bot.events import ChatEvent
from config.settings import Settings
from tests.conftest import Chat, Remote, outbox, run_worker
from tests.test_evidence import chat_with, freeze
from workers.state import keys
from workers.state.request import RequestState
from workers.state.store import RequestStore

ONCALL = "    break_glass: ['shell:alice']\n    break_glass_review: 1h\n"


def glass_chat(policy_file: Path, redis: Redis, settings: Settings, more: str = "") -> Chat:
    now = datetime.now(UTC)
    frozen = freeze(now - timedelta(hours=1), now + timedelta(days=1), "holidays")
    return chat_with(policy_file, redis, settings, ONCALL + frozen + more)


def test_break_glass_during_a_freeze_lands_at_once_with_its_reason_and_asks_for_a_review(
    policy_file: Path, redis: Redis, settings: Settings, origin: Remote
) -> None:
    chat = glass_chat(policy_file, redis, settings)
    assert chat.say("bob", "deploy-prd", "deploy awesome 2.1.0 to prd").reason == "freeze"
    reply = chat.say(
        "alice", "deploy-prd", "deploy! awesome 2.1.0 to prd reason INC-42 checkout down"
    )
    assert reply.request_id, reply.text
    assert reply.text.startswith(f"🚨 break-glass {reply.request_id} by alice: ")
    assert "reason: INC-42 checkout down" in reply.text
    assert "`review " in reply.text
    run_worker(redis)
    assert RequestStore(redis).state(reply.request_id) is RequestState.PUSHED
    message = origin.message()
    assert "Break-Glass: INC-42 checkout down\n" in message
    assert "Approved-by" not in message
    status = chat.say("bob", "deploy-prd", "status prd").text
    assert f"🚨 unreviewed break-glass {reply.request_id}" in status
    assert redis.zcard(keys.BREAK_GLASS_UNREVIEWED) == 1


def test_only_an_approver_who_did_not_ask_reviews_it(
    policy_file: Path, redis: Redis, settings: Settings
) -> None:
    chat = glass_chat(policy_file, redis, settings)
    reply = chat.say("alice", "deploy-prd", "deploy! awesome 2.1.0 to prd reason INC-42")
    request_id = str(reply.request_id)
    assert chat.say("alice", "deploy-prd", f"review {request_id}").reason == "own_request"
    assert chat.say("bob", "deploy-prd", f"review {request_id}").reason == "not_approver"
    [told] = chat.react("carol", "deploy-prd", "white_check_mark", request_id)
    assert told.text == f"✅ break-glass {request_id} reviewed by carol", told.text
    assert redis.zcard(keys.BREAK_GLASS_UNREVIEWED) == 0
    assert "unreviewed" not in chat.say("bob", "deploy-prd", "status prd").text
    assert chat.say("dave", "deploy-prd", f"review {request_id}").reason == "not_pending"


def test_break_glass_by_someone_not_on_call_or_without_a_reason_is_refused(
    policy_file: Path, redis: Redis, settings: Settings, origin: Remote
) -> None:
    chat = glass_chat(policy_file, redis, settings)
    refused = chat.say("bob", "deploy-prd", "deploy! awesome 2.1.0 to prd reason I want to")
    assert refused.reason == "not_break_glass"
    assert refused.text == "bob may not break glass in prd (break_glass: shell:alice)"
    assert chat.say("alice", "deploy-prd", "deploy! awesome 2.1.0 to prd").reason == "grammar"
    assert redis.keys("releasegate:request:*") == []
    assert origin.count() == 1


def test_a_bot_account_on_call_never_breaks_glass_and_is_asked_about_once(
    policy_file: Path, redis: Redis, settings: Settings, origin: Remote
) -> None:
    """The platform says the sender is a bot (asked only now that a decision needs it, as
    each adapter passes the question): refused, nothing filed or committed."""
    chat = glass_chat(policy_file, redis, settings)
    asked: list[str] = []

    def is_bot() -> bool:
        asked.append("alice")
        return True

    event = ChatEvent(
        platform="shell",
        user="alice",
        user_name="alice",
        channel="deploy-prd",
        text="deploy! awesome 2.1.0 to prd reason INC-42",
        bot=is_bot,
    )
    [refused] = chat.conversation.handle(event)
    assert refused.reason == "not_break_glass"
    assert asked == ["alice"]
    assert redis.keys("releasegate:request:*") == []
    assert origin.count() == 1


def test_an_overdue_review_is_reminded_once_in_the_channel(
    policy_file: Path, redis: Redis, settings: Settings
) -> None:
    chat = glass_chat(policy_file, redis, settings)
    reply = chat.say("alice", "deploy-prd", "deploy! awesome 2.1.0 to prd reason INC-42")
    ctx: Context = chat.conversation.ctx
    assert ctx.remind_unreviewed() == []  # not due for an hour
    later = datetime.now(UTC) + timedelta(hours=2)
    ctx.clock = lambda: later
    assert ctx.remind_unreviewed() == [reply.request_id]
    assert ctx.remind_unreviewed() == []  # once
    [note] = outbox(redis)
    assert note.startswith(
        f"⏰ break-glass {reply.request_id} is still unreviewed (reason: INC-42)"
    )


def test_status_skips_an_unreviewed_break_glass_whose_request_aged_out(
    policy_file: Path, redis: Redis, settings: Settings
) -> None:
    """Redis keeps an ended request for the retention period; Git keeps the record. `status`
    must not fail on an unreviewed entry whose request is gone."""
    chat = glass_chat(policy_file, redis, settings)
    reply = chat.say("alice", "deploy-prd", "deploy! awesome 2.1.0 to prd reason INC-42")
    redis.delete(keys.request(str(reply.request_id)))
    said = chat.say("bob", "deploy-prd", "status prd")
    assert said.ok, said.text
    assert "unreviewed" not in said.text
