"""Redis Sentinel: the bot and the workers reach the master the sentinels name, and follow
a failover without a restart, also over TLS with an ACL user. Real servers: a master, a
replica and three sentinels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import AuthenticationError, ConnectionError, RedisError

from bot.conversation import Conversation
from config.policy import parse_policy
from config.settings import Settings
from tests.certificates import loopback_certificates
from tests.conftest import Chat, Remote, eventually, run_worker
from tests.sentinel import SentinelWorld
from workers.git.mirrors import Mirrors
from workers.state.connection import connect
from workers.state.request import RequestState
from workers.state.store import RequestStore


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelWorld]:
    world = SentinelWorld(tmp_path / "sentinel")
    world.folder.mkdir()
    yield world.start()
    world.stop()


def test_a_request_approved_before_the_master_dies_lands_after_the_failover(
    sentinels: SentinelWorld,
    origin: Remote,
    policy_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The URL's host and port are not used with sentinels: only its database.
    monkeypatch.setenv("RELEASEGATE_REDIS_URL", "redis://ignored.invalid:1/0")
    monkeypatch.setenv("RELEASEGATE_REDIS_SENTINELS", sentinels.sentinels)
    lands_across_a_failover(sentinels, origin, policy_file, tmp_path, monkeypatch)


def test_over_tls_with_an_acl_user_and_a_sentinel_password_it_lands_across_a_failover(
    origin: Remote, policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hardened install: the nodes and the sentinels speak only TLS, the data takes only
    the ACL user `releasegate`, and the sentinels want their own password."""
    folder = tmp_path / "sentinel"
    folder.mkdir()
    tls = loopback_certificates(folder)
    world = SentinelWorld(
        folder, tls=tls, user=("releasegate", "data-pw"), sentinel_password="s-pw"
    )
    world.start()
    try:
        master = world.master_port()
        with pytest.raises(ConnectionError):  # no plain text spoken here
            Redis(port=master, socket_timeout=1).ping()
        with pytest.raises(AuthenticationError):  # nor as the default user
            Redis(port=master, ssl=True, ssl_ca_certs=str(tls.ca), password="data-pw").ping()
        monkeypatch.setenv(
            "RELEASEGATE_REDIS_URL",
            f"rediss://releasegate:data-pw@ignored.invalid:1/0?ssl_ca_certs={tls.ca}",
        )
        monkeypatch.setenv("RELEASEGATE_REDIS_SENTINELS", world.sentinels)
        monkeypatch.setenv("RELEASEGATE_REDIS_SENTINEL_PASSWORD", "s-pw")
        lands_across_a_failover(world, origin, policy_file, tmp_path, monkeypatch)
    finally:
        world.stop()


def lands_across_a_failover(
    sentinels: SentinelWorld,
    origin: Remote,
    policy_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELEASEGATE_POLICY", str(policy_file))
    monkeypatch.setenv("RELEASEGATE_WORKDIR", str(tmp_path / "work"))
    settings = Settings()
    redis = connect(settings)
    policy = parse_policy(policy_file.read_text())
    chat = Chat(Conversation(policy, redis, Mirrors.of(policy, tmp_path / "b", freshness=0)))
    asked = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    request_id = asked.request_id
    assert request_id, asked.text
    assert chat.say("carol", "deploy-prd", "approve").queued == (request_id,)
    # The replica has the approval before the master dies (WAIT: what confirmed writes will do).
    assert eventually(lambda: redis.wait(1, 1000) == 1, 20)
    old = sentinels.master_port()
    sentinels.kill(old)
    new = sentinels.wait_for_failover(old)
    assert new != old
    # The same client, the same bot: it asks the sentinels for the new master (a command in
    # the moment of the switch may fail, as the bot's "cannot reach its Redis" says).
    store = RequestStore(redis)
    assert eventually(lambda: store.state(str(request_id)) is RequestState.APPROVED, 20)
    run_worker(redis)  # the job connects through the sentinels too
    assert RequestStore(redis).state(str(request_id)) is RequestState.PUSHED
    assert b"newTag: 2.1.0" in origin.file("env/prd/kustomization.yml")
    assert chat.say("bob", "deploy-prd", "status prd").ok


def test_with_sentinels_the_urls_user_database_and_options_are_kept_and_its_host_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELEASEGATE_REDIS_SENTINELS", "127.0.0.1:1")
    monkeypatch.setenv(
        "RELEASEGATE_REDIS_URL",
        "rediss://rg:s3cret@ignored.invalid:1/3?socket_timeout=2&ssl_ca_certs=/etc/ca.crt",
    )
    kept = connect(Settings()).connection_pool.connection_kwargs
    assert (kept["username"], kept["password"], kept["db"]) == ("rg", "s3cret", 3)
    assert (kept["socket_timeout"], kept["ssl_ca_certs"]) == (2.0, "/etc/ca.crt")
    assert "host" not in kept
    assert "port" not in kept


class RogueSentinel:
    """A listener on loopback where the operator's sentinels should be: it records every byte
    a client sends it, as someone who took a sentinel's address would."""

    def __init__(self) -> None:
        import socket
        import threading

        self.heard = bytearray()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            client.settimeout(2)
            try:
                while chunk := client.recv(4096):
                    self.heard += chunk
                    client.sendall(b"-ERR rogue\r\n")
            except OSError:
                pass
            finally:
                client.close()

    def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize("tls", [False, True])
def test_a_rogue_sentinel_hears_no_password_when_the_sentinels_are_spoken_to_over_tls(
    tls: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever answers at a sentinel's address is sent the sentinel password (and then names
    a master of its own, to be sent the data password). Over TLS, trusting only the
    operator's CA (the chart's Sentinel mode), it hears nothing it can read; over plain TCP
    it hears the password, which is why the chart refuses Sentinel without TLS."""
    rogue = RogueSentinel()
    (tmp_path / "tls").mkdir()
    files = loopback_certificates(tmp_path / "tls")
    scheme = (
        f"rediss://:data-s3cret@_/0?ssl_ca_certs={files.ca}" if tls else "redis://:data-s3cret@_/0"
    )
    monkeypatch.setenv("RELEASEGATE_REDIS_URL", scheme)
    monkeypatch.setenv("RELEASEGATE_REDIS_SENTINELS", f"127.0.0.1:{rogue.port}")
    monkeypatch.setenv("RELEASEGATE_REDIS_SENTINEL_PASSWORD", "sentinel-s3cret")
    try:
        with pytest.raises(RedisError):
            connect(Settings()).ping()
        heard = bytes(rogue.heard)
    finally:
        rogue.close()
    if tls:
        assert b"s3cret" not in heard
        assert (
            heard[:1] == b"\x16"
        )  # a TLS handshake, which a listener without the CA's key cannot finish
    else:
        assert b"sentinel-s3cret" in heard, "over plain TCP the rogue hears it: the test can tell"
