"""Outside text is inert before it reaches chat: one function (`config.text.inert`), one
table of hostile strings per platform, and the places that echo outside text played end to
end (history through Slack's front door, in test_slack.py; a pinned file's lines in the card's diff, Argo CD's
message in `status`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis

from config.text import inert, inert_block
from tests.conftest import Chat, Remote, git

# What a Slack message (mrkdwn) would make live: mentions, broadcasts and links.
SLACK_LIVE = ["<!here>", "<!channel>", "<!everyone>", "<@U", "<#C", "<http", "|", "://"]
SLACK_HOSTILE = [
    "<!here> deploy now",
    "<!channel>",
    "<!subteam^S0REL>",
    "<@U0LEAD1> approve this",
    "<#C0PRD|deploy-prd>",
    "<https://evil.example|release notes>",
    "see https://evil.example/login",
]
# What a Rocket.Chat message (markdown) would make live.
ROCKETCHAT_LIVE = ["@all", "@here", "@carol", "](", "://"]
ROCKETCHAT_HOSTILE = [
    "@all deploy now",
    "@here",
    "ping @carol",
    "[release notes](https://evil.example)",
    "see https://evil.example/login",
]


@pytest.mark.parametrize("text", SLACK_HOSTILE)
def test_nothing_slack_would_make_live_survives(text: str) -> None:
    shown = inert(text, 200)
    assert not [live for live in SLACK_LIVE if live in shown and live != "|"], shown
    assert "<" not in shown
    assert ">" not in shown


@pytest.mark.parametrize("text", ROCKETCHAT_HOSTILE)
def test_nothing_rocketchat_would_make_live_survives(text: str) -> None:
    shown = inert(text, 200)
    assert not [live for live in ROCKETCHAT_LIVE if live in shown], shown


def test_content_cannot_close_the_fence_it_is_shown_in() -> None:
    shown = inert_block("comment: ```\n<!here> @all\n````` and ``")
    assert "```" not in shown
    assert shown.count("\n") == 2  # lines stay lines
    assert "<!here>" not in shown
    assert "@all" not in shown


def outside_commit(
    origin: Remote, tmp_path: Path, file: str, old: str, new: str, message: str
) -> None:
    clone = tmp_path / "outside"
    if not clone.exists():
        git("clone", "--quiet", str(origin.path), str(clone))
    path = clone / file
    path.write_text(path.read_text().replace(old, new))
    git("-c", "user.name=<!here>", "-c", "user.email=m@x", "commit", "-qam", message, cwd=clone)
    git("push", "--quiet", "origin", "main", cwd=clone)


def test_a_pinned_files_lines_in_the_diff_cannot_close_the_fence_or_ping(
    chat: Chat, origin: Remote, tmp_path: Path
) -> None:
    outside_commit(
        origin,
        tmp_path,
        "env/prd/kustomization.yml",
        "newTag: 2.0.0",
        "newTag: 2.0.0 # ``` <!here> @all",
        "a comment",
    )
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert reply.request_id, reply.text
    assert reply.text.count("```") == 2  # our fence, opened and closed, and no other
    assert "<!here>" not in reply.text
    assert "@all" not in reply.text


def test_argo_cds_message_in_status_is_inert(
    chat: Chat, redis: Redis, origin: Remote, tmp_path: Path, policy_file: Path
) -> None:
    from bot.live import live_lines
    from config.policy import parse_policy
    from config.settings import Settings
    from tests.fake_argocd import TOKEN, FakeApp, FakeArgoCD, serve
    from tests.test_rollout import ARGOCD, with_rollout

    argocd = FakeArgoCD()
    app = FakeApp("awesome-prd", origin.path, origin.path.as_uri(), behaviour="degraded")
    app.progressing = 0
    argocd.apps["awesome-prd"] = app
    server = serve(argocd)
    policy_file.write_text(with_rollout(origin.path, ARGOCD))
    chat.conversation.ctx.policy = parse_policy(policy_file.read_text())
    settings = Settings(argocd_url=f"http://127.0.0.1:{server.server_port}", argocd_token=TOKEN)
    try:
        original = app.document

        def hostile() -> dict[str, object]:
            document = original()
            document["status"]["health"]["message"] = (  # type: ignore[index]
                "<!here> ``` see https://evil.example"
            )
            return document

        app.document = hostile  # type: ignore[method-assign]
        [line] = live_lines(chat.conversation, settings, "prd")
    finally:
        server.shutdown()
    assert "Degraded" in line
    for live in ("<!here>", "https://evil", "```"):
        assert live not in line, line


def test_a_diffs_hunk_marks_stay_readable_while_its_mentions_are_defused() -> None:
    shown = inert_block("@@ -8,3 +8,3 @@\n-    newTag: 2.0.0 # @all\n+    newTag: 2.1.0")
    assert shown.startswith("@@ -8,3 +8,3 @@\n")
    assert "@all" not in shown
