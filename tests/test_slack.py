"""Slack end to end: signed requests into our real HTTP server, Slack's Web API answered by a
local stand-in that records every call, a real Redis, a real Git remote and a real RQ worker."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from slack_sdk.socket_mode.request import SocketModeRequest

from bot.conversation import Conversation
from bot.executor import BoundedExecutor
from bot.platforms.slack_api import SlackPoster
from bot.platforms.slack_standin import FakeSlack, serve
from bot.reports import OutboxConsumer
from bot.server import create_app
from config.policy import parse_policy
from config.settings import Settings
from tests.conftest import Remote, eventually, http_server, run_worker
from tests.slack_sender import SECRET, SlackSender
from tests.test_inert import outside_commit
from workers.git.mirrors import Mirrors
from workers.state.request import RequestState
from workers.state.store import RequestStore

SLACK_POLICY = """
repository: {{url: "{url}", author: "releasegate <rg@example.invalid>"}}
groups:
  developers: ["slack:UALICE", "slack:UBOB"]
  release-managers: ["slack:UCAROL", "slack-group:SREL"]
environments:
  int:
    channels: ["slack:CINT"]
    deployers: ["group:developers", "group:release-managers"]
  prd:
    aliases: [production]
    channels: ["slack:CPRD"]
    deployers: ["group:developers", "group:release-managers"]
    approvers: ["group:release-managers"]
    approvals: 1
apps:
  awesome:
    pins:
      int:
        - {{file: env/int/kustomization.yml, kustomize_image: bespinian/awesome-image}}
      prd:
        - {{file: env/prd/kustomization.yml, kustomize_image: bespinian/awesome-image}}
        - {{file: env/prd/kustomization.yml, configmap_literal: awesome-config/appVersion}}
"""


def chat_calls(slack: SlackWorld) -> list[str]:
    return [c.method for c in slack.fake.calls if c.method.startswith("chat.")]


class SlackWorld(SlackSender):
    """Our server on a real port, the fake Slack API, and ways to talk to both."""

    def __init__(
        self,
        url: str,
        fake: FakeSlack,
        redis: Redis,
        conversation: Conversation,
        chat_work: BoundedExecutor,
    ) -> None:
        super().__init__(url)
        self.chat_work = chat_work
        self.fake = fake
        self.redis = redis
        self.conversation = conversation
        self.store = RequestStore(redis)

    def card(self, index: int = 0) -> tuple[str, str]:
        """(request id, ts) of the index-th request card posted."""
        posted = [p for p in self.fake.called("chat.postMessage") if p.get("blocks")]
        blocks = posted[index]["blocks"]
        match = re.search(r"\((R[0-9A-Z]{6})\)", blocks[0]["text"]["text"])
        assert match is not None
        request_id = match.group(1)
        # The card is bound right after Slack answered the post.
        assert eventually(lambda: self.store.message_of(request_id), 5, every=0.02)
        ts = self.store.message_of(request_id)
        assert ts is not None
        return request_id, ts

    def settle(self) -> None:
        """Slack handlers run after the ack: wait until the work they handed on is done."""
        assert self.chat_work.wait_idle(), "the server's chat work did not finish"


@pytest.fixture
def fake_slack() -> Iterator[tuple[FakeSlack, str]]:
    fake = FakeSlack(groups={"SREL": ["UDAVE"]})
    server = serve(fake)
    yield fake, f"http://127.0.0.1:{server.server_port}/api/"
    server.shutdown()


@pytest.fixture
def slack(
    fake_slack: tuple[FakeSlack, str],
    redis: Redis,
    remote: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    policy_file: Path,
) -> Iterator[SlackWorld]:
    fake, api_url = fake_slack
    policy_file.write_text(SLACK_POLICY.format(url=remote.as_uri()))
    monkeypatch.setenv("RELEASEGATE_SLACK_BOT_TOKEN", "xoxb-test-token")
    monkeypatch.setenv("RELEASEGATE_SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("RELEASEGATE_SLACK_API_URL", api_url)
    settings = Settings()
    policy = parse_policy(policy_file.read_text())
    conversation = Conversation(policy, redis, Mirrors.of(policy, settings.workdir, freshness=0))
    app = create_app(settings, policy, redis, conversation)
    with http_server(app) as url:
        yield SlackWorld(url, fake, redis, conversation, app.state.chat_work)


def test_url_verification_is_answered(slack: SlackWorld) -> None:
    body = json.dumps(
        {
            "type": "url_verification",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        }
    )
    response = slack.post(body, "application/json")
    assert response.status_code == 200
    assert response.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}


def test_a_slash_command_posts_a_request_card_with_buttons_in_the_channel(
    slack: SlackWorld,
) -> None:
    response = slack.command("UALICE", "CPRD", "awesome 2.1.0 to prd")
    assert response.status_code == 200
    [card] = slack.fake.wait_for("chat.postMessage")
    assert card["channel"] == "CPRD"
    text = card["blocks"][0]["text"]["text"]
    assert text.startswith("*Deploy awesome 2.1.0 to prd (R")
    assert "requested by <@UALICE>; approvals 0/1: nobody" in text
    assert "+    newTag: 2.1.0" in text
    buttons = card["blocks"][1]["elements"]
    assert [b["action_id"] for b in buttons] == ["releasegate_approve", "releasegate_reject"]
    request_id, ts = slack.card()
    assert slack.store.state(request_id) is RequestState.PENDING
    assert slack.store.request_for_message("slack:CPRD", ts) == request_id


def test_an_approval_reaction_queues_and_the_worker_reports_in_the_thread(
    slack: SlackWorld, redis: Redis, origin: Remote
) -> None:
    slack.command("UALICE", "CPRD", "awesome 2.1.0 to prd")
    slack.fake.wait_for("chat.postMessage")
    request_id, ts = slack.card()
    slack.reaction("UCAROL", "CPRD", ts, "white_check_mark")
    [update] = slack.fake.wait_for("chat.update")
    assert update["ts"] == ts
    assert "✅ approved; queued" in update["blocks"][0]["text"]["text"]
    assert len(update["blocks"]) == 1  # no buttons once decided
    thread_posts = [p for p in slack.fake.called("chat.postMessage") if p.get("thread_ts") == ts]
    assert thread_posts[0]["text"] == f"{request_id} approved by <@UCAROL> (1/1); queued"
    run_worker(redis)
    assert slack.store.state(request_id) is RequestState.PUSHED
    posts = slack.fake.wait_for("chat.postMessage", 3)
    assert posts[-1]["thread_ts"] == ts
    assert (
        posts[-1]["text"]
        == f"{request_id}: pushed {origin.head()[:7]}: awesome: 2.0.0 -> 2.1.0 (prd)"
    )
    # The card is refreshed right after the thread is told: wait for it, not for the post.
    pushed = f"🚀 pushed: {origin.head()[:7]}"
    assert eventually(
        lambda: any(
            pushed in u["blocks"][0]["text"]["text"] for u in slack.fake.called("chat.update")
        ),
        10,
    ), slack.fake.called("chat.update")[-1]
    assert "Approved-by: slack:UCAROL" in origin.message()


def test_the_approve_button_counts_like_a_reaction(slack: SlackWorld) -> None:
    slack.command("UALICE", "CPRD", "awesome 2.1.0 to prd")
    slack.fake.wait_for("chat.postMessage")
    request_id, ts = slack.card()
    assert slack.button("UCAROL", "CPRD", ts, request_id).status_code == 200
    slack.fake.wait_for("chat.update")
    assert slack.store.state(request_id) is RequestState.APPROVED


def test_approve_written_in_the_requests_thread_counts(slack: SlackWorld) -> None:
    slack.command("UALICE", "CPRD", "awesome 2.1.0 to prd")
    slack.fake.wait_for("chat.postMessage")
    request_id, ts = slack.card()
    slack.message("UCAROL", "CPRD", "approve", thread=ts)
    slack.fake.wait_for("chat.update")
    assert slack.store.state(request_id) is RequestState.APPROVED


def test_a_member_of_a_slack_user_group_may_approve(slack: SlackWorld) -> None:
    slack.command("UALICE", "CPRD", "awesome 2.1.0 to prd")
    slack.fake.wait_for("chat.postMessage")
    request_id, ts = slack.card()
    slack.reaction("UDAVE", "CPRD", ts, "+1")
    slack.fake.wait_for("chat.update")
    assert slack.store.approvals(request_id) == ["slack:UDAVE"]
    assert slack.fake.called("usergroups.users.list")[0]["usergroup"] == "SREL"


def test_a_plain_message_in_a_deployment_channel_is_a_command(slack: SlackWorld) -> None:
    slack.message("UALICE", "CPRD", "deploy production")
    [answer] = slack.fake.wait_for("chat.postEphemeral")
    assert answer["text"] == "prd has no promote_from; say `deploy APP VERSION to prd`"
    assert answer["user"] == "UALICE"


def test_a_mention_elsewhere_is_a_command_and_other_chatter_is_ignored(slack: SlackWorld) -> None:
    slack.message("UALICE", "CRANDOM", "deploy awesome 2.1.0 to prd")
    slack.message("UALICE", "CPRD", "lunch anyone?")
    slack.event(
        {
            "type": "app_mention",
            "user": "UBOB",
            "channel": "CRANDOM",
            "text": "<@UBOT> status prd",
            "ts": "1.2",
        }
    )
    [status] = slack.fake.wait_for("chat.postMessage")
    assert status["text"].startswith("awesome: prd 2.0.0\n")
    slack.settle()
    assert len(chat_calls(slack)) == 1  # the status answer; nothing for the rest
    assert slack.store.pending_all() == []


@pytest.mark.parametrize(
    ("user", "channel", "text", "answer"),
    [
        ("UMALLORY", "CPRD", "awesome 2.1.0 to prd", "<@UMALLORY> may not deploy to prd"),
        (
            "UALICE",
            "CINT",
            "awesome 2.1.0 to prd",
            "deploys to prd are requested in slack:CPRD, not here",
        ),
        ("UALICE", "CPRD", "awesome $(reboot) to prd", "is not a valid version of awesome"),
    ],
)
def test_a_refused_command_is_answered_privately_and_leaves_nothing(
    slack: SlackWorld, origin: Remote, user: str, channel: str, text: str, answer: str
) -> None:
    slack.command(user, channel, text)
    [ephemeral] = slack.fake.wait_for("chat.postEphemeral")
    assert answer in ephemeral["text"]
    assert ephemeral["user"] == user
    assert slack.fake.called("chat.postMessage") == []
    assert slack.redis.keys("releasegate:request:*") == []
    assert origin.count() == 1


def test_reactions_by_the_requester_or_a_non_approver_do_not_count_and_say_why(
    slack: SlackWorld,
) -> None:
    slack.command("UALICE", "CPRD", "awesome 2.1.0 to prd")
    slack.fake.wait_for("chat.postMessage")
    request_id, ts = slack.card()
    slack.reaction("UALICE", "CPRD", ts, "white_check_mark")
    slack.button("UBOB", "CPRD", ts, request_id)
    first, second = slack.fake.wait_for("chat.postEphemeral", 2)
    assert {first["text"], second["text"]} == {
        f"the requester cannot approve their own request {request_id}",
        "<@UBOB> may not approve deploys to prd; approvers: group:release-managers",
    }
    assert slack.store.approvals(request_id) == []
    assert slack.store.state(request_id) is RequestState.PENDING


def test_a_reaction_on_another_message_is_ignored(slack: SlackWorld) -> None:
    slack.reaction("UCAROL", "CPRD", "1234.5678", "white_check_mark")
    slack.settle()
    assert chat_calls(slack) == []


def test_removing_the_approval_reaction_before_quorum_withdraws_it(slack: SlackWorld) -> None:
    ctx = slack.conversation.ctx
    prd = ctx.policy.environments["prd"].model_copy(update={"approvals": 2})
    ctx.policy = ctx.policy.model_copy(
        update={"environments": {**ctx.policy.environments, "prd": prd}}
    )
    slack.command("UALICE", "CPRD", "awesome 2.1.0 to prd")
    slack.fake.wait_for("chat.postMessage")
    request_id, ts = slack.card()
    slack.reaction("UCAROL", "CPRD", ts, "white_check_mark")
    slack.fake.wait_for("chat.update")
    assert slack.store.approvals(request_id) == ["slack:UCAROL"]
    slack.reaction("UCAROL", "CPRD", ts, "white_check_mark", added=False)
    updates = slack.fake.wait_for("chat.update", 2)
    assert "approvals 0/2: nobody" in updates[-1]["blocks"][0]["text"]["text"]
    assert slack.store.approvals(request_id) == []
    assert slack.store.state(request_id) is RequestState.PENDING


@pytest.mark.parametrize(
    "header", [{}, {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}]
)
def test_a_redelivered_event_is_handled_once(slack: SlackWorld, header: dict[str, str]) -> None:
    slack.command("UALICE", "CPRD", "awesome 2.1.0 to prd")
    slack.fake.wait_for("chat.postMessage")
    _, ts = slack.card()
    slack.reaction("UCAROL", "CPRD", ts, "white_check_mark", event_id="EvSAME")
    slack.fake.wait_for("chat.update")
    slack.reaction("UCAROL", "CPRD", ts, "white_check_mark", event_id="EvSAME", headers=header)
    slack.settle()
    assert len(slack.fake.called("chat.update")) == 1
    assert [p for p in slack.fake.called("chat.postEphemeral")] == []


def test_a_retried_slash_command_makes_one_request(slack: SlackWorld) -> None:
    slack.command("UALICE", "CPRD", "awesome 2.1.0 to prd", trigger="T-SAME")
    slack.command("UALICE", "CPRD", "awesome 2.1.0 to prd", trigger="T-SAME")
    slack.fake.wait_for("chat.postMessage")
    slack.settle()
    assert len(slack.fake.called("chat.postMessage")) == 1
    assert len(slack.store.pending_all()) == 1


def test_a_double_clicked_button_approves_once(slack: SlackWorld) -> None:
    slack.command("UALICE", "CPRD", "awesome 2.1.0 to prd")
    slack.fake.wait_for("chat.postMessage")
    request_id, ts = slack.card()
    slack.button("UCAROL", "CPRD", ts, request_id, action_ts="111.222")
    slack.button("UCAROL", "CPRD", ts, request_id, action_ts="111.222")
    slack.fake.wait_for("chat.update")
    slack.settle()
    assert len(slack.fake.called("chat.update")) == 1


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [
        ("bad signature", {"secret": "not-the-secret"}),
        ("stale timestamp", {"timestamp": int(time.time()) - 6 * 60}),
    ],
)
def test_a_forged_or_stale_request_gets_401_and_changes_nothing(
    slack: SlackWorld, origin: Remote, kind: str, kwargs: dict[str, Any]
) -> None:
    response = slack.command("UALICE", "CPRD", "awesome 2.1.0 to prd", **kwargs)
    assert response.status_code == 401, kind
    slack.settle()
    assert chat_calls(slack) == []
    assert slack.redis.keys("releasegate:request:*") == []
    assert origin.count() == 1


def test_a_request_without_signature_headers_gets_401(slack: SlackWorld) -> None:
    response = httpx.post(
        f"{slack.url}/slack/events",
        content="command=/deploy&text=status",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 401


def test_events_from_the_bot_itself_are_ignored(slack: SlackWorld) -> None:
    slack.event(
        {
            "type": "message",
            "user": "UBOT",
            "bot_id": "BBOT",
            "channel": "CPRD",
            "text": "deploy awesome 2.1.0 to prd",
            "ts": "1.1",
        }
    )
    slack.settle()
    assert chat_calls(slack) == []


def test_a_result_slack_will_not_take_is_kept_and_posted_later(
    slack: SlackWorld, redis: Redis, settings: Settings
) -> None:
    slack.command("UALICE", "CINT", "awesome 2.1.0 to int")
    slack.fake.wait_for("chat.postMessage")
    request_id, _ = slack.card()
    slack.fake.fail["chat.postMessage"] = 1
    run_worker(redis)
    slack.fake.wait_for("chat.postMessage (failed)")  # the bot's outbox consumer tried once
    assert slack.store.is_unreported(request_id)
    slack.command("UBOB", "CINT", f"status {request_id}")
    [answer] = slack.fake.wait_for("chat.postMessage", 2)[1:]
    assert "could not be posted yet; it will be retried" in answer["text"]
    poster = SlackPoster("xoxb-test-token", Settings().slack_api_url)
    # Another bot (or this one, RETRY_IDLE later) claims the entry and posts it.
    assert OutboxConsumer(redis, "slack", poster, retry_idle=timedelta(0)).run_once() == 1
    assert not slack.store.is_unreported(request_id)
    assert slack.fake.texts()[-1].startswith(f"{request_id}: pushed ")


def test_a_rate_limited_post_is_retried_after_retry_after(slack: SlackWorld, redis: Redis) -> None:
    slack.fake.rate_limit["chat.postMessage"] = 1
    slack.command("UALICE", "CPRD", "awesome 2.1.0 to prd")
    [card] = slack.fake.wait_for("chat.postMessage")
    assert card["blocks"]
    assert chat_calls(slack) == ["chat.postMessage (rate limited)", "chat.postMessage"]


def test_socket_mode_dispatches_to_the_same_handlers(slack: SlackWorld) -> None:
    """Socket Mode hands Bolt the payload without an HTTP signature; the rules are the same."""
    from slack_bolt.adapter.socket_mode.internals import run_bolt_app

    from bot.executor import BoundedExecutor
    from bot.platforms.slack import slack_app

    bolt = slack_app(Settings(), _conversation_of(slack), BoundedExecutor())
    payload = {
        "type": "event_callback",
        "event_id": "EvSOCKET",
        "team_id": "T1",
        "api_app_id": "A1",
        "event": {
            "type": "message",
            "user": "UALICE",
            "channel": "CPRD",
            "text": "deploy awesome 2.1.0 to prd",
            "ts": "5.5",
        },
    }
    response = run_bolt_app(
        bolt, SocketModeRequest(type="events_api", envelope_id="e1", payload=payload)
    )
    assert response.status == 200
    [card] = slack.fake.wait_for("chat.postMessage")
    assert "Deploy awesome 2.1.0 to prd" in card["blocks"][0]["text"]["text"]


def _conversation_of(slack: SlackWorld) -> Conversation:
    policy = parse_policy(Path(Settings().policy).read_text())
    return Conversation(policy, slack.redis, Mirrors.of(policy, Settings().workdir, freshness=0))


def test_a_reaction_after_expiry_says_so_and_the_card_shows_it(slack: SlackWorld) -> None:
    slack.command("UALICE", "CPRD", "awesome 2.1.0 to prd")
    slack.fake.wait_for("chat.postMessage")
    request_id, ts = slack.card()
    ctx = slack.conversation.ctx
    expires = slack.store.get(request_id).expires_at
    ctx.clock = lambda: expires  # type: ignore[assignment,return-value]
    slack.reaction("UCAROL", "CPRD", ts, "white_check_mark")
    [refusal] = slack.fake.wait_for("chat.postEphemeral")
    assert (
        refusal["text"]
        == f"{request_id} expired before it was approved; ask again with a new request"
    )
    update = slack.fake.wait_for("chat.update")[-1]
    assert "⌛ expired before it was approved" in update["blocks"][0]["text"]["text"]
    assert "actions" not in [b["type"] for b in update["blocks"]]


def test_a_request_nobody_touches_expires_and_its_thread_is_told_once(slack: SlackWorld) -> None:
    slack.command("UALICE", "CPRD", "awesome 2.1.0 to prd")
    slack.fake.wait_for("chat.postMessage")
    request_id, ts = slack.card()
    expires = slack.store.get(request_id).expires_at
    slack.conversation.ctx.clock = lambda: expires  # type: ignore[assignment,return-value]
    # Nobody says anything: the bot's own expiry round ends it, the outbox tells the thread.
    told = [
        p
        for p in slack.fake.wait_for("chat.postMessage", 2, timeout=30)
        if p.get("thread_ts") == ts
    ]
    assert told[0]["text"].startswith(f"{request_id}: expired: not approved before ")
    update = slack.fake.wait_for("chat.update")[-1]
    assert "⌛ expired before it was approved" in update["blocks"][0]["text"]["text"]
    assert "actions" not in [b["type"] for b in update["blocks"]]
    time.sleep(6)  # another round of the loop: nothing more is said
    assert len([p for p in slack.fake.called("chat.postMessage") if p.get("thread_ts") == ts]) == 1
    assert slack.store.state(request_id) is RequestState.EXPIRED


def test_the_manifest_subscribes_to_what_the_app_handles() -> None:
    from importlib import resources

    from ruamel.yaml import YAML

    text = (resources.files("config") / "examples" / "slack-manifest.yaml").read_text()
    manifest = YAML(typ="safe").load(text)
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"reaction_added", "reaction_removed", "message.channels", "app_mention"} <= events
    assert manifest["features"]["slash_commands"][0]["command"] == "/deploy"
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert scopes == {
        "commands",
        "chat:write",
        "app_mentions:read",
        "reactions:read",
        "channels:history",
        "groups:history",
        "usergroups:read",
    }
    assert manifest["settings"]["interactivity"]["is_enabled"] is True


def test_history_shows_forged_subjects_authors_and_trailers_inert_in_slack(
    slack: SlackWorld,
    origin: Remote,
    tmp_path: Path,
) -> None:
    outside_commit(
        origin,
        tmp_path,
        "env/prd/kustomization.yml",
        "newTag: 2.0.0",
        "newTag: 2.0.1",
        "<!here> hotfix https://evil.example\n\nReleasegate-Request: RABCDEF\n"
        "Requested-by: <!channel>\nApproved-by: <@U0LEAD1> [ok](https://evil.example)\n",
    )
    slack.message("UALICE", "CPRD", "history prd")
    slack.settle()
    answers = [
        c.get("text", "")
        for c in slack.fake.called("chat.postMessage") + slack.fake.called("chat.postEphemeral")
    ]
    [answer] = [a for a in answers if "hotfix" in a]
    assert "hotfix" in answer
    assert "RABCDEF" in answer
    for live in ("<!here>", "<!channel>", "<@U0LEAD1>", "https://evil", "]("):
        assert live not in answer, answer


def test_a_delivery_signed_for_another_workspace_is_refused(
    slack: SlackWorld, origin: Remote
) -> None:
    """Same signing secret (an org-wide app), another workspace: nothing is taken."""
    slack.fake.team = "T2"
    slack.command("UALICE", "CPRD", "deploy awesome 2.1.0 to prd")
    slack.message("UALICE", "CPRD", "deploy awesome 2.1.0 to prd")
    slack.settle()
    assert slack.redis.keys("releasegate:request:*") == []
    assert chat_calls(slack) == []
    assert origin.count() == 1


def test_a_delivery_for_another_app_of_the_organisation_is_refused(
    slack: SlackWorld, origin: Remote
) -> None:
    """Same signing secret and workspace, another app (`api_app_id`): nothing is taken."""
    slack.fake.app = "A2"
    slack.command("UALICE", "CPRD", "deploy awesome 2.1.0 to prd")
    slack.message("UALICE", "CPRD", "deploy awesome 2.1.0 to prd")
    slack.settle()
    assert slack.redis.keys("releasegate:request:*") == []
    assert chat_calls(slack) == []
    assert origin.count() == 1


def test_a_bot_users_reaction_or_button_never_counts_as_an_approval(
    slack: SlackWorld, origin: Remote
) -> None:
    """A bot in an approvers' group (an integration added to it by mistake) cannot approve."""
    slack.fake.groups["SREL"] = ["UDAVE", "UBOTX"]
    slack.fake.bots.add("UBOTX")
    slack.message("UALICE", "CPRD", "deploy awesome 2.1.0 to prd")
    slack.settle()
    request_id, ts = slack.card()
    slack.reaction("UBOTX", "CPRD", ts, "white_check_mark")
    slack.button("UBOTX", "CPRD", ts, request_id)
    slack.settle()
    assert slack.store.approvals(request_id) == []
    assert slack.store.state(request_id) is RequestState.PENDING
    refusals = [p["text"] for p in slack.fake.called("chat.postEphemeral")]
    assert refusals
    assert all("bots never approve" in text for text in refusals)
    slack.reaction("UDAVE", "CPRD", ts, "white_check_mark")  # a person in the same group
    slack.settle()
    assert slack.store.state(request_id) is RequestState.APPROVED


def test_slack_is_asked_whether_a_sender_is_a_bot_only_when_a_decision_needs_it(
    slack: SlackWorld, origin: Remote
) -> None:
    """Commands and requests cost no `users.info`; an approval asks it once, of the
    approver alone (the rule lives in the conversation, not in the adapter)."""
    slack.fake.groups["SREL"] = ["UDAVE"]
    slack.command("UALICE", "CPRD", "status")
    slack.message("UALICE", "CPRD", "deploy awesome 2.1.0 to prd")
    slack.settle()
    request_id, ts = slack.card()
    assert slack.fake.called("users.info") == []
    slack.reaction("UDAVE", "CPRD", ts, "white_check_mark")
    slack.settle()
    assert slack.store.state(request_id) is RequestState.APPROVED
    assert [p["user"] for p in slack.fake.called("users.info")] == ["UDAVE"]


def test_an_approver_taken_out_of_the_slack_user_group_no_longer_counts_at_the_commit(
    slack: SlackWorld, origin: Remote
) -> None:
    """Membership is read again for the commit (the bot refreshes it; a reading older than a
    minute confirms nobody), not frozen at the moment of the approval."""
    from bot.platforms.slack_api import SlackPoster, refresh_slack_groups

    slack.message("UALICE", "CPRD", "deploy awesome 2.1.0 to prd")
    slack.settle()
    request_id, ts = slack.card()
    slack.reaction("UDAVE", "CPRD", ts, "white_check_mark")  # in SREL: counts now
    slack.settle()
    assert slack.store.state(request_id) is RequestState.APPROVED
    slack.fake.groups["SREL"] = []  # taken out before the job runs
    poster = SlackPoster("xoxb-test-token", Settings().slack_api_url)
    refresh_slack_groups(slack.redis, poster, slack.conversation.policy)
    run_worker(slack.redis)
    assert slack.store.state(request_id) is RequestState.FAILED
    result = slack.store.result(request_id)
    assert result is not None
    assert "slack:UDAVE is no longer an approver of prd" in result.message
    assert origin.count() == 1


def test_the_same_delivery_to_two_replicas_is_handled_once(
    slack: SlackWorld, redis: Redis, settings: Settings
) -> None:
    """Slack may deliver a command or an event to any replica, and again to another: the
    deliveries are told apart in the Redis they share."""
    conversation = slack.conversation
    other = create_app(Settings(), conversation.policy, redis, conversation)
    with http_server(other) as other_url:
        second = SlackWorld(other_url, slack.fake, redis, conversation, other.state.chat_work)
        slack.command("UALICE", "CPRD", "awesome 2.1.0 to prd", trigger="T-BOTH")
        second.command("UALICE", "CPRD", "awesome 2.1.0 to prd", trigger="T-BOTH")
        slack.fake.wait_for("chat.postMessage")
        slack.settle()
        second.settle()
        assert len(slack.store.pending_all()) == 1
        _, ts = slack.card()
        slack.reaction("UCAROL", "CPRD", ts, "white_check_mark", event_id="EvBOTH")
        second.reaction("UCAROL", "CPRD", ts, "white_check_mark", event_id="EvBOTH")
        slack.fake.wait_for("chat.update")
        slack.settle()
        second.settle()
    assert len(slack.fake.called("chat.update")) == 1
    posted = [p.get("text", "") for p in slack.fake.called("chat.postMessage")]
    assert len([t for t in posted if t.startswith("Deploy awesome")]) == 1  # one card
    assert len([t for t in posted if "approved by" in t]) == 1  # one approval told


def test_a_command_a_reaction_or_a_button_while_redis_is_unreachable_is_answered(
    fake_slack: tuple[FakeSlack, str],
    remote: Path,
    policy_file: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Never silence: the person who asked, reacted or clicked is told Redis cannot be
    reached."""
    fake, api_url = fake_slack
    policy_file.write_text(SLACK_POLICY.format(url=remote.as_uri()))
    monkeypatch.setenv("RELEASEGATE_SLACK_BOT_TOKEN", "xoxb-test-token")
    monkeypatch.setenv("RELEASEGATE_SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("RELEASEGATE_SLACK_API_URL", api_url)
    settings = Settings()
    policy = parse_policy(policy_file.read_text())
    gone = Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    conversation = Conversation(policy, gone, Mirrors.of(policy, settings.workdir, freshness=0))
    app = create_app(settings, policy, gone, conversation)
    with http_server(app) as url:
        world = SlackWorld(url, fake, gone, conversation, app.state.chat_work)
        assert world.reaction("UCAROL", "CPRD", "1700000001.000100", "white_check_mark").is_success
        assert world.button("UCAROL", "CPRD", "1700000001.000100", "RABCDEF").is_success
        assert world.command("UALICE", "CPRD", "awesome 2.1.0 to prd").is_success
        told = fake.wait_for("chat.postEphemeral", count=3)
    assert sorted(t["user"] for t in told) == ["UALICE", "UCAROL", "UCAROL"]
    assert all("cannot reach its Redis right now" in t["text"] for t in told)
