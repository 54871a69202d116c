"""Signed commits: every commit releasegate makes is signed (SSH or GnuPG) and verifies with
`git verify-commit`; a head without a trusted signature is not built on; a policy that
requires signing stops a worker without a key."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from config.settings import Settings
from tests.conftest import Chat, Remote, git, run_worker
from tests.test_cli import releasegate
from workers.state.request import RequestState
from workers.state.store import RequestStore

AUTHOR = "releasegate@demo.invalid"


def ssh_key(directory: Path, name: str = "signing") -> tuple[Path, str]:
    """A fresh ed25519 key without passphrase; returns (private key, public key line)."""
    key = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
        check=True,
        capture_output=True,
    )
    return key, key.with_suffix(".pub").read_text().strip()


def allowed_signers(path: Path, *public_keys: str) -> Path:
    path.write_text("".join(f'{AUTHOR} namespaces="git" {key}\n' for key in public_keys))
    return path


def verify(origin: Remote, signers: Path, rev: str = "main") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", rev],
        cwd=origin.path,
        capture_output=True,
        text=True,
        check=False,
    )


def push_signed_commit(remote: Path, clone: Path, key: Path) -> None:
    """Someone trusted (signing as releasegate's e-mail, with `key`) pushes an empty, signed
    commit onto main."""
    git("clone", "--quiet", str(remote), str(clone))
    git(
        "-c",
        "gpg.format=ssh",
        "-c",
        f"user.signingkey={key}",
        "-c",
        "user.name=ops",
        "-c",
        f"user.email={AUTHOR}",
        "commit",
        "--allow-empty",
        "-S",
        "-qm",
        "signed",
        cwd=clone,
    )
    git("push", "--quiet", "origin", "main", cwd=clone)


def deploy_int(chat: Chat, redis: Redis) -> str:
    request_id = str(chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int").request_id)
    run_worker(redis)
    return request_id


def test_every_commit_is_signed_with_the_ssh_key_and_verifies(
    chat: Chat,
    redis: Redis,
    origin: Remote,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
) -> None:
    key, public = ssh_key(tmp_path)
    monkeypatch.setenv("RELEASEGATE_GIT_SIGNING_KEY", str(key))
    request_id = deploy_int(chat, redis)
    assert RequestStore(redis).state(request_id) is RequestState.PUSHED
    checked = verify(origin, allowed_signers(tmp_path / "allowed", public))
    assert checked.returncode == 0, checked.stderr
    assert 'Good "git" signature for releasegate@demo.invalid' in checked.stderr
    _other, stranger = ssh_key(tmp_path, "stranger")
    assert verify(origin, allowed_signers(tmp_path / "others", stranger)).returncode != 0


@pytest.fixture
def gnupg_home(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A throwaway GnuPG home with one key without passphrase; yields (home, key id)."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(
        [
            "gpg",
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            f"releasegate <{AUTHOR}>",
            "ed25519",
            "sign",
            "never",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-secret-keys"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    key_id = next(line.split(":")[4] for line in listing.splitlines() if line.startswith("sec"))
    yield home, key_id
    subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False, capture_output=True)


def test_every_commit_is_signed_with_the_gnupg_key_and_verifies(
    chat: Chat,
    redis: Redis,
    origin: Remote,
    gnupg_home: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
) -> None:
    home, key_id = gnupg_home
    monkeypatch.setenv("GNUPGHOME", str(home))
    monkeypatch.setenv("RELEASEGATE_GIT_SIGNING_KEY", f"gpg:{key_id}")
    deploy_int(chat, redis)
    checked = subprocess.run(
        ["git", "verify-commit", "main"],
        cwd=origin.path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "Good signature from" in checked.stderr


def test_a_head_without_a_trusted_signature_is_not_built_on(
    chat: Chat,
    redis: Redis,
    origin: Remote,
    tmp_path: Path,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
) -> None:
    key, public = ssh_key(tmp_path)
    signers = allowed_signers(tmp_path / "allowed", public)
    monkeypatch.setenv("RELEASEGATE_GIT_SIGNING_KEY", str(key))
    policy_file.write_text(
        policy_file.read_text().replace(
            "  branch: main\n", f"  branch: main\n  trusted_signers: {signers}\n"
        )
    )
    # The seed commit is unsigned: nothing is built on it.
    request_id = deploy_int(chat, redis)
    store = RequestStore(redis)
    assert store.state(request_id) is RequestState.FAILED
    message = store.result(request_id).message  # type: ignore[union-attr]
    assert f"the branch head {origin.head()[:7]} is not signed by a trusted signer" in message
    assert origin.count() == 1
    # Someone trusted signs a commit on top: releasegate builds on it, and signs its own.
    push_signed_commit(origin.path, tmp_path / "clone", key)
    second = str(chat.say("alice", "deploy-int", "deploy awesome 2.1.1 to int").request_id)
    run_worker(redis)
    assert store.state(second) is RequestState.PUSHED
    assert verify(origin, signers).returncode == 0


def test_a_policy_requiring_signatures_stops_a_worker_and_check_config_without_a_key(
    tmp_path: Path, policy_file: Path, redis: Redis, settings: Settings
) -> None:
    policy_file.write_text(
        policy_file.read_text().replace(
            "  branch: main\n", "  branch: main\n  require_signed: true\n"
        )
    )
    env = {
        "RELEASEGATE_POLICY": str(policy_file),
        "RELEASEGATE_REDIS_URL": settings.redis_url.get_secret_value()
        if settings.redis_url
        else "",
        "RELEASEGATE_WORKDIR": str(tmp_path / "w"),
    }
    worker = releasegate("worker", "--burst", env=env)
    assert worker.returncode == 1
    assert "requires signed commits (repository.require_signed)" in worker.stderr
    assert "RELEASEGATE_GIT_SIGNING_KEY is not set" in worker.stderr
    check = releasegate("check-config", env=env)
    assert check.returncode == 1
    assert "requires signed commits" in check.stderr
    missing = releasegate(
        "worker", "--burst", env={**env, "RELEASEGATE_GIT_SIGNING_KEY": str(tmp_path / "nope")}
    )
    assert "is not a readable SSH private key file" in missing.stderr
