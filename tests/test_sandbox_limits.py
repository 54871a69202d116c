"""The repository's validate command runs within limits, and one that runs into a limit
fails saying which: processes, address space, a file's size, the size of /tmp, time.

Each runs the real command under real bubblewrap (as `nobody` where the tests run as root),
with the limit set low enough for a small script to reach it."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from redis import Redis

from bot.embedded_redis import EmbeddedRedis
from config.errors import ValidationFailed
from tests.conftest import Chat, Remote, outbox
from tests.test_cli import releasegate, settings_env
from workers.landing.sandbox import Limits, Sandbox
from workers.landing.validation import validate


@pytest.fixture(autouse=True)
def _bwrap() -> None:
    assert shutil.which("bwrap"), "bubblewrap is installed by .ci/run and scripts/test"


def run(tmp_path: Path, script: str, **limits: float) -> str:
    """Run `script` (sh) in the sandbox with `limits`; returns why it failed."""
    tree = tmp_path / "tree"
    tree.mkdir(exist_ok=True)
    (tree / "validate.sh").write_text(script)
    sandbox = Sandbox(limits=Limits(**limits))  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed) as failed:
        validate("sh validate.sh", tree, sandbox=sandbox)
    return str(failed.value)


def test_too_many_processes_fail_saying_so(tmp_path: Path) -> None:
    script = "i=0\nwhile [ $i -lt 200 ]; do sleep 5 & i=$((i+1)); done\nwait\n"
    said = run(tmp_path, script, processes=20)
    assert "more processes than the sandbox allows (20)" in said, said


def test_too_much_memory_fails_saying_so(tmp_path: Path) -> None:
    said = run(tmp_path, "python3 -c 'b = bytearray(600 * 1024 * 1024)'\n", memory_mb=256)
    assert "more memory than the sandbox allows (256 MiB)" in said, said


def test_a_file_too_large_fails_saying_so(tmp_path: Path) -> None:
    said = run(tmp_path, "head -c 8388608 /dev/zero > big\n", file_mb=1)
    assert "a file larger than the sandbox allows (1 MiB)" in said, said


def test_a_full_tmp_fails_saying_so(tmp_path: Path) -> None:
    said = run(tmp_path, "head -c 8388608 /dev/zero > /tmp/big\n", tmp_mb=2)
    assert "filled the sandbox's /tmp (2 MiB)" in said, said


def test_a_command_that_runs_too_long_is_ended_with_its_children(tmp_path: Path) -> None:
    started = time.monotonic()
    said = run(tmp_path, "sleep 60 &\nsleep 60\n", seconds=1)
    assert "took longer than the sandbox allows (1s)" in said, said
    assert time.monotonic() - started < 10


def test_a_command_within_its_limits_passes(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "validate.sh").write_text("head -c 1024 /dev/zero > /tmp/small\nls > listing\n")
    validate("sh validate.sh", tree, sandbox=Sandbox(limits=Limits(file_mb=1, tmp_mb=2)))


def test_a_deploy_whose_validator_hits_a_limit_fails_saying_which_and_commits_nothing(
    chat: Chat,
    redis: Redis,
    redis_server: EmbeddedRedis,
    origin: Remote,
    policy_file: Path,
    tmp_path: Path,
) -> None:
    command = "sh -c 'head -c 8388608 /dev/zero > big'"
    text = policy_file.read_text().replace(
        "    approval_ttl: 2h\n", f"    approval_ttl: 2h\n    validate: {json.dumps(command)}\n"
    )
    policy_file.write_text(text)
    chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    chat.say("carol", "deploy-prd", "approve")
    before = origin.count()
    env = settings_env(policy_file, redis_server.url, tmp_path / "worker", VALIDATE_MAX_FILE_MB="1")
    done = releasegate("worker", "--burst", env=env)
    assert done.returncode == 0, done.stderr
    [report] = outbox(redis)
    assert "a file larger than the sandbox allows (1 MiB)" in report, report
    assert origin.count() == before
