"""The GitOps remote over SSH, against a real sshd: a deploy key restricted to git-shell,
host keys checked against the operator's known_hosts (never trusted on first use unless
asked, never written outside the work folder), and ssh's own words when it says no."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from bot.conversation import Conversation
from config.policy import parse_policy
from config.settings import Settings
from tests.conftest import Chat, Remote, outbox, run_worker
from tests.sshd import SSHD, SshServer, keypair, ssh_server
from tests.test_cli import releasegate, settings_env
from workers.git.mirrors import Mirrors
from workers.state.request import RequestState
from workers.state.store import RequestStore


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    assert SSHD.exists(), "openssh-server is installed by .ci/run and scripts/test"
    server = ssh_server(tmp_path / "sshd")
    yield server
    server.stop()


def over_ssh(
    sshd: SshServer,
    remote: Path,
    policy_file: Path,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
    known_hosts: Path | None,
    key: Path | None = None,
    accept_new: bool = False,
) -> Chat:
    """The policy's repository is the remote behind sshd; the worker's settings say how to
    reach it; returns a chat whose bot reads it the same way."""
    text = policy_file.read_text().replace(remote.resolve().as_uri(), sshd.url(remote.resolve()))
    policy_file.write_text(text)
    monkeypatch.setenv("RELEASEGATE_GIT_SSH_KEY", str(key or sshd.deploy_key))
    if known_hosts is not None:
        monkeypatch.setenv("RELEASEGATE_GIT_KNOWN_HOSTS", str(known_hosts))
    if accept_new:
        monkeypatch.setenv("RELEASEGATE_GIT_ACCEPT_NEW_HOST_KEYS", "true")
    settings = Settings()
    policy = parse_policy(text)
    mirror = Mirrors.of(policy, settings.workdir / "bot", freshness=0, access=settings.git_access())
    return Chat(Conversation(policy, redis, mirror))


def test_a_deploy_lands_over_ssh_with_the_deploy_key_and_a_known_host(
    sshd: SshServer,
    remote: Path,
    origin: Remote,
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chat = over_ssh(
        sshd, remote, policy_file, redis, monkeypatch, sshd.known_hosts(tmp_path / "known_hosts")
    )
    request_id = chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int").request_id
    run_worker(redis)
    assert RequestStore(redis).state(str(request_id)) is RequestState.PUSHED
    assert b"newTag: 2.1.0" in origin.file("env/int/kustomization.yml")


def test_a_wrong_deploy_key_fails_with_sshs_own_words(
    sshd: SshServer,
    remote: Path,
    origin: Remote,
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    known = sshd.known_hosts(tmp_path / "known_hosts")
    chat = over_ssh(sshd, remote, policy_file, redis, monkeypatch, known)
    request_id = chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int").request_id
    keypair(tmp_path / "stranger")
    monkeypatch.setenv("RELEASEGATE_GIT_SSH_KEY", str(tmp_path / "stranger"))
    run_worker(redis)
    assert RequestStore(redis).state(str(request_id)) is RequestState.FAILED
    [told] = outbox(redis)
    assert "Permission denied (publickey)" in told
    assert origin.count() == 1


def test_a_changed_host_key_is_refused_by_check_config_and_the_worker(
    sshd: SshServer,
    remote: Path,
    origin: Remote,
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A known_hosts holding another key for this host and port: a man in the middle."""
    good = sshd.known_hosts(tmp_path / "known_hosts")
    chat = over_ssh(sshd, remote, policy_file, redis, monkeypatch, good)
    request_id = chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int").request_id
    other = keypair(tmp_path / "impostor")
    sshd.known_hosts(good, key=other)  # the server's key is no longer the one we know
    home = Path.home() / ".ssh" / "known_hosts"
    before = home.read_bytes() if home.exists() else None
    run_worker(redis)
    assert RequestStore(redis).state(str(request_id)) is RequestState.FAILED
    [told] = outbox(redis)
    assert f"the Git server's SSH host key is not the one in {good}: refused" in told
    assert origin.count() == 1
    env = settings_env(
        policy_file,
        str(settings.redis_url.get_secret_value()),  # type: ignore[union-attr]
        tmp_path / "cc",
        GIT_SSH_KEY=str(sshd.deploy_key),
        GIT_KNOWN_HOSTS=str(good),
    )
    done = releasegate("check-config", env=env)
    assert done.returncode != 0
    assert "is not the one in" in done.stderr + done.stdout
    assert (home.read_bytes() if home.exists() else None) == before  # nothing written there


def test_an_unknown_host_is_refused_in_one_line_unless_trust_on_first_use_is_asked(
    sshd: SshServer,
    remote: Path,
    origin: Remote,
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    chat = over_ssh(sshd, remote, policy_file, redis, monkeypatch, empty)
    refused = chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int")
    assert not refused.ok
    assert f"the Git server's SSH host key is not in {empty}: add it (ssh-keyscan)" in refused.text
    monkeypatch.delenv("RELEASEGATE_GIT_KNOWN_HOSTS")
    chat = over_ssh(sshd, remote, policy_file, redis, monkeypatch, None, accept_new=True)
    request_id = chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int").request_id
    run_worker(redis)
    assert RequestStore(redis).state(str(request_id)) is RequestState.PUSHED
    learned = Settings().workdir / "known_hosts"
    assert sshd.host_key.split()[1] in learned.read_text()  # kept in our own work folder


def test_sshd_going_away_fails_the_request_once_with_its_cause(
    sshd: SshServer,
    remote: Path,
    origin: Remote,
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chat = over_ssh(
        sshd, remote, policy_file, redis, monkeypatch, sshd.known_hosts(tmp_path / "known_hosts")
    )
    request_id = chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int").request_id
    sshd.stop()
    run_worker(redis)
    assert RequestStore(redis).state(str(request_id)) is RequestState.FAILED
    [told] = outbox(redis)
    assert "Connection refused" in told
    assert origin.count() == 1
    shutil.rmtree(sshd.folder, ignore_errors=True)


def test_a_repositorys_own_deploy_key_is_used_instead_of_the_processs(
    sshd: SshServer,
    remote: Path,
    origin: Remote,
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RELEASEGATE_GIT_SSH_KEY holds a key the server does not know; the repository's
    `ssh_key` is its deploy key: the bot reads and the worker pushes with the latter."""
    keypair(tmp_path / "stranger")
    policy_file.write_text(
        policy_file.read_text().replace(
            "  branch: main\n", f"  branch: main\n  ssh_key: {sshd.deploy_key}\n", 1
        )
    )
    known = sshd.known_hosts(tmp_path / "known_hosts")
    chat = over_ssh(sshd, remote, policy_file, redis, monkeypatch, known, tmp_path / "stranger")
    request_id = chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int").request_id
    run_worker(redis)
    assert RequestStore(redis).state(str(request_id)) is RequestState.PUSHED
    assert b"newTag: 2.1.0" in origin.file("env/int/kustomization.yml")
