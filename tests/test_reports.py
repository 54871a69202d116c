"""Workers queue outcomes in the outbox; the bot posts each one once, whatever dies on the way."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis import Redis

from bot.platforms.slack_api import SlackPoster
from bot.platforms.slack_standin import FakeSlack, serve
from bot.reports import GROUP, OutboxConsumer
from config.settings import Settings
from tests.conftest import Chat, run_worker
from workers.state.outbox import stream
from workers.state.request import RequestState, Result
from workers.state.store import RequestStore


@pytest.fixture
def slack_api() -> Iterator[tuple[FakeSlack, SlackPoster]]:
    fake = FakeSlack()
    server = serve(fake)
    yield fake, SlackPoster("xoxb-test", f"http://127.0.0.1:{server.server_port}/api/")
    server.shutdown()


def pushed_int_request(chat: Chat, redis: Redis) -> str:
    reply = chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int")
    run_worker(redis)
    assert RequestStore(redis).state(str(reply.request_id)) is RequestState.PUSHED
    return str(reply.request_id)


def bot(redis: Redis, poster: SlackPoster, name: str) -> OutboxConsumer:
    # Reclaim at once what another consumer left pending, as a later bot would after a while.
    return OutboxConsumer(redis, "shell", poster, name=name, retry_idle=timedelta(0))


def test_a_worker_does_not_post_itself_it_queues_the_outcome(
    chat: Chat, redis: Redis, settings: Settings, slack_api: tuple[FakeSlack, SlackPoster]
) -> None:
    fake, _poster = slack_api
    request_id = pushed_int_request(chat, redis)
    [(_id, fields)] = redis.xrange(stream("shell"))
    assert fields[b"request"].decode() == request_id
    assert fake.calls == []
    assert RequestStore(redis).is_unreported(request_id)


def test_a_post_the_bot_crashed_before_acknowledging_is_made_once_by_the_next_bot(
    chat: Chat, redis: Redis, settings: Settings, slack_api: tuple[FakeSlack, SlackPoster]
) -> None:
    fake, poster = slack_api
    request_id = pushed_int_request(chat, redis)
    first = bot(redis, poster, "bot-a")
    first._ensure_group()
    # bot-a reads the entry, then dies before posting it.
    assert redis.xreadgroup(GROUP, "bot-a", {stream("shell"): ">"}, count=10)
    assert bot(redis, poster, "bot-b").run_once() == 1
    assert bot(redis, poster, "bot-b").run_once() == 0
    assert bot(redis, poster, "bot-c").run_once() == 0
    [post] = fake.called("chat.postMessage")
    assert post["text"].startswith(f"{request_id}: pushed ")
    assert not RequestStore(redis).is_unreported(request_id)
    assert redis.xpending(stream("shell"), GROUP)["pending"] == 0


def test_an_entry_posted_but_not_acknowledged_is_not_posted_again(
    chat: Chat, redis: Redis, settings: Settings, slack_api: tuple[FakeSlack, SlackPoster]
) -> None:
    fake, poster = slack_api
    request_id = pushed_int_request(chat, redis)
    first = bot(redis, poster, "bot-a")
    first._ensure_group()
    [(_stream, [(_entry, _fields)])] = redis.xreadgroup(GROUP, "bot-a", {stream("shell"): ">"})
    # bot-a posted and recorded it, then died before XACK.
    from bot.telling import post_outcome

    post_outcome(RequestStore(redis), poster, request_id)
    RequestStore(redis).mark_reported(request_id)
    assert bot(redis, poster, "bot-b").run_once() == 1
    assert len(fake.called("chat.postMessage")) == 1
    assert redis.xpending(stream("shell"), GROUP)["pending"] == 0


def test_a_post_chat_refuses_stays_pending_and_is_retried(
    chat: Chat, redis: Redis, settings: Settings, slack_api: tuple[FakeSlack, SlackPoster]
) -> None:
    fake, poster = slack_api
    request_id = pushed_int_request(chat, redis)
    fake.fail["chat.postMessage"] = 1
    consumer = bot(redis, poster, "bot-a")
    assert consumer.run_once() == 0
    assert RequestStore(redis).is_unreported(request_id)
    assert redis.xpending(stream("shell"), GROUP)["pending"] == 1
    assert consumer.run_once() == 1
    assert fake.texts()[-1].startswith(f"{request_id}: pushed ")
    assert not RequestStore(redis).is_unreported(request_id)


def test_an_outcome_that_could_not_be_posted_for_a_day_is_no_longer_retried(
    chat: Chat, redis: Redis, settings: Settings, slack_api: tuple[FakeSlack, SlackPoster]
) -> None:
    fake, poster = slack_api
    request_id = str(chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id)
    store = RequestStore(redis)
    old = Result(
        state=RequestState.FAILED,
        message="old news",
        finished_at=datetime.now(UTC) - timedelta(days=2),
    )
    store.finish(request_id, [RequestState.PENDING], old)
    from workers.state.outbox import publish

    publish(redis, store.get(request_id))
    assert bot(redis, poster, "bot-a").run_once() == 1
    assert fake.calls == []
    assert not store.is_unreported(request_id)
    assert store.result(request_id) == old


def test_a_pushed_commit_and_its_application_are_links_where_people_click(
    chat: Chat,
    redis: Redis,
    settings: Settings,
    slack_api: tuple[FakeSlack, SlackPoster],
    policy_file: Path,
) -> None:
    """The thread names the commit with its page on the forge (from the repository's URL, or
    the policy's web_url), and a followed application with its page in Argo CD."""
    from bot.server import links
    from config.policy import parse_policy

    fake, poster = slack_api
    text = policy_file.read_text().replace(
        "  branch: main\n", "  branch: main\n  web_url: https://git.acme.example/env/commit/{sha}\n"
    )
    policy = parse_policy(text)
    chat.conversation.ctx.policy = policy
    request_id = pushed_int_request(chat, redis)
    commit = RequestStore(redis).result(request_id).commit  # type: ignore[union-attr]
    settings = Settings(argocd_url="https://argocd.acme.example/")
    consumer = OutboxConsumer(
        redis, "shell", poster, name="bot-a", links=links(settings, chat.conversation)
    )
    assert consumer.run_once() == 1
    [post] = fake.called("chat.postMessage")
    assert post["text"].endswith(f"\nhttps://git.acme.example/env/commit/{commit}")
    application = links(settings, chat.conversation).application("awesome-prd")
    assert application == "https://argocd.acme.example/applications/awesome-prd"


@pytest.mark.parametrize(
    ("url", "page"),
    [
        ("git@github.com:acme/environments.git", "https://github.com/acme/environments/commit/S"),
        (
            "https://gitlab.acme.example/g/sub/env.git",
            "https://gitlab.acme.example/g/sub/env/-/commit/S",
        ),
        ("https://user:pw@bitbucket.org/acme/env.git", "https://bitbucket.org/acme/env/commits/S"),
        ("file:///srv/git/env.git", None),
    ],
)
def test_a_commits_page_is_derived_from_the_repository_url(url: str, page: str | None) -> None:
    from config.policy import Repository

    assert Repository(url=url).commit_url("S") == page
