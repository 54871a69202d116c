"""Socket Mode through Slack's reconnects, against a stand-in speaking the protocol over a
real WebSocket to a real `releasegate serve`: a refresh, a link dropped without a close
frame, and a half-open link whose pings go unanswered."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.embedded_redis import EmbeddedRedis, free_port
from bot.platforms.slack_standin import FakeSlack, serve
from tests.socket_standin import SocketModeStandIn


@dataclass
class Linked:
    slack: SocketModeStandIn
    server: subprocess.Popen[bytes]
    log: Path

    def said(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def cpu_seconds(self) -> float:
        """The server's CPU time so far (user and system), from /proc."""
        fields = Path(f"/proc/{self.server.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def linked(tmp_path: Path, policy_file: Path, redis_server: EmbeddedRedis) -> Iterator[Linked]:
    standin = SocketModeStandIn()
    api = serve(FakeSlack(socket_url=standin.url))
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")}
    env = {
        **inherited,
        "RELEASEGATE_POLICY": str(policy_file),
        "RELEASEGATE_REDIS_URL": redis_server.url,
        "RELEASEGATE_WORKDIR": str(tmp_path / "work"),
        "RELEASEGATE_HTTP_PORT": str(free_port()),
        "RELEASEGATE_SLACK_BOT_TOKEN": "xoxb-test",
        "RELEASEGATE_SLACK_SIGNING_SECRET": "secret",
        "RELEASEGATE_SLACK_APP_TOKEN": "xapp-test",
        "RELEASEGATE_SLACK_API_URL": f"http://127.0.0.1:{api.server_port}/api/",
    }
    log = tmp_path / "serve.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    world = Linked(standin, server, log)
    try:
        standin.wait_for_link(1, timeout=30)
        yield world
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        standin.close()
        api.shutdown()


def test_a_command_right_after_a_refresh_is_acked_within_a_second(linked: Linked) -> None:
    first = linked.slack.command("help")
    linked.slack.wait_for_ack(first, timeout=5)
    linked.slack.refresh()
    linked.slack.wait_for_link(2, timeout=5)
    sent = time.monotonic()
    envelope = linked.slack.command("status")
    acked = linked.slack.wait_for_ack(envelope, timeout=10)
    assert acked - sent < 1.0, linked.said()


def test_a_link_dropped_without_a_close_frame_is_replaced_within_ten_seconds(
    linked: Linked,
) -> None:
    """... and without spinning on the dead socket meanwhile."""
    cpu, dropped = linked.cpu_seconds(), time.monotonic()
    linked.slack.relay.drop()
    envelope = linked.slack.command("status")  # sent into the dead link: redelivered later
    linked.slack.wait_for_link(2, timeout=10)
    assert linked.slack.wait_for_ack(envelope, timeout=10) - dropped < 10, linked.said()
    time.sleep(2)  # a client spinning on a dead socket would burn these seconds
    assert linked.cpu_seconds() - cpu < 1.5, linked.said()


def test_a_half_open_link_whose_pings_go_unanswered_is_replaced_within_thirty_seconds(
    linked: Linked,
) -> None:
    silent = time.monotonic()
    linked.slack.relay.blackhole()
    envelope = linked.slack.command("status")  # carried nowhere: redelivered later
    linked.slack.wait_for_link(2, timeout=30)
    assert linked.slack.wait_for_ack(envelope, timeout=30) - silent < 30, linked.said()
