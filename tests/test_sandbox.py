"""The repository's code runs where no secret is: a `validate` script that hunts for the
worker's secrets (its ancestors' environments through /proc, the signing key's file, its
own environment) and prints them reversed and base64-encoded finds nothing under the
sandbox, while the same script beside the worker (RELEASEGATE_VALIDATE_SANDBOX=none) finds
them: the hunt is real, and so is the wall."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from redis import Redis

from bot.embedded_redis import EmbeddedRedis
from tests.conftest import Chat, Remote, git, outbox
from tests.test_cli import releasegate, settings_env
from tests.test_signing import ssh_key

SECRETS = {
    "FORGE_TOKEN": "ghp-forge-token-of-the-workers-0001",
    "ARGOCD_TOKEN": "argocd-token-of-the-workers-0002",
    "SLACK_SIGNING_SECRET": "slack-signing-secret-of-the-bot-0003",
}

HUNT = r"""
import base64, os, sys

def say(data):
    print(base64.b64encode(data[::-1]).decode())

pid = os.getpid()
for _ in range(8):
    try:
        status = open(f"/proc/{pid}/status").read()
        pid = int(next(l.split()[1] for l in status.splitlines() if l.startswith("PPid:")))
        if pid <= 0:
            break
        say(open(f"/proc/{pid}/environ", "rb").read())
    except (OSError, StopIteration, ValueError) as exc:
        print("no", type(exc).__name__)
        break
for path in sys.argv[1:]:
    try:
        say(open(path, "rb").read())
    except OSError as exc:
        print("no", type(exc).__name__)
say("\n".join(f"{k}={v}" for k, v in os.environ.items()).encode())
sys.exit(1)
"""


def found_in(report: str, secret: str) -> bool:
    """Whether `secret` is in `report`, plainly or in the hunt's encoding."""
    if secret in report:
        return True
    for word in report.split():
        try:
            if secret.encode() in base64.b64decode(word, validate=True)[::-1]:
                return True
        except ValueError:
            continue
    return False


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_a_validator_hunting_for_secrets_finds_none_in_the_sandbox(
    chat: Chat,
    redis: Redis,
    redis_server: EmbeddedRedis,
    origin: Remote,
    policy_file: Path,
    tmp_path: Path,
    sandbox: str,
) -> None:
    if sandbox == "bwrap":
        assert shutil.which("bwrap"), "bubblewrap is installed by .ci/run and scripts/test"
    keys = tmp_path / "keys"
    keys.mkdir()
    key, _public = ssh_key(keys)
    clone = tmp_path / "writer"
    git("clone", "--quiet", str(origin.path), str(clone))
    (clone / "validate.py").write_text(HUNT)
    git("add", "validate.py", cwd=clone)
    git("-c", "user.name=w", "-c", "user.email=w@x", "commit", "-qm", "validate", cwd=clone)
    git("push", "--quiet", "origin", "main", cwd=clone)
    command = f"python3 validate.py {key}"
    text = policy_file.read_text().replace(
        "    approval_ttl: 2h\n", f"    approval_ttl: 2h\n    validate: {json.dumps(command)}\n"
    )
    policy_file.write_text(text)
    chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    chat.say("carol", "deploy-prd", "approve")
    env = settings_env(
        policy_file,
        redis_server.url,
        tmp_path / "worker",
        GIT_SIGNING_KEY=str(key),
        VALIDATE_SANDBOX=sandbox,
        **SECRETS,
    )
    done = releasegate("worker", "--burst", env=env)
    assert done.returncode == 0, done.stderr
    [report] = outbox(redis)
    assert "failed (exit 1)" in report, report
    secrets = [*SECRETS.values(), key.read_text().splitlines()[1]]
    leaked = [secret for secret in secrets if found_in(report, secret)]
    if sandbox == "bwrap":
        assert leaked == [], report
        assert "no FileNotFoundError" in report  # the key's file is not there at all
    else:
        assert leaked, "beside the worker the hunt finds the secrets: the test can tell"
    assert origin.count() == 2  # the seed and the writer's commit: nothing of ours
