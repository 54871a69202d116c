"""What lands is only what was approved, whatever the repository's `validate` script does.

Each attack runs through a real worker (`releasegate worker --burst`), bubblewrap, Redis and
a bare remote, and each failed on the code before the validator got a copy of the tree and
the commit was built from the planned bytes:
- the script rewrites the pinned version and adds a file: the commit held both;
- the script replaces the slot's `.git` with a repository of its own whose `core.fsmonitor`
  is a script of its choosing: the worker ran that script outside the sandbox;
- a slot's clone found with settings we never write (`core.fsmonitor`, borrowed objects) is
  thrown away and cloned again, and none of its settings run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from redis import Redis

from bot.embedded_redis import EmbeddedRedis
from config.policy import parse_policy
from tests.conftest import Chat, Remote, git, outbox
from tests.test_cli import releasegate, settings_env
from workers.git.checkout import Checkout
from workers.git.integrity import TamperedCommit

REWRITE = """#!/bin/sh
sed -i 's/newTag: 2.1.0/newTag: 6.6.6-evil/' env/prd/kustomization.yml
printf 'kind: Secret\\n' > env/prd/backdoor.yml
exit 0
"""

# Turns the `.git` it finds into a repository of its own (where the worker could be made to
# use it), with an index, a staged backdoor and an fsmonitor that writes a marker where the
# worker can (outside the sandbox) and the worker's environment with it.
REPLACE_GIT = """#!/bin/sh
marker="$1"
rm -rf .git
git init -q . 2>/dev/null
cat > fsmonitor.sh <<EOF
#!/bin/sh
env > "$marker"
exit 1
EOF
chmod +x fsmonitor.sh
printf 'kind: Secret\\n' > env/prd/backdoor.yml
git add env/prd/backdoor.yml
git config core.fsmonitor "$PWD/fsmonitor.sh"
exit 0
"""


def _with_validator(origin: Remote, tmp_path: Path, script: str) -> None:
    """Push `validate.sh` to the remote, as someone with write access to the repository would."""
    clone = tmp_path / "writer"
    git("clone", "--quiet", str(origin.path), str(clone))
    (clone / "validate.sh").write_text(script)
    git("add", "validate.sh", cwd=clone)
    git("-c", "user.name=w", "-c", "user.email=w@x", "commit", "-qm", "validate", cwd=clone)
    git("push", "--quiet", "origin", "main", cwd=clone)


def _set_validate(policy_file: Path, command: str) -> None:
    text = policy_file.read_text().replace(
        "    approval_ttl: 2h\n", f"    approval_ttl: 2h\n    validate: {json.dumps(command)}\n"
    )
    policy_file.write_text(text)


def _deploy(chat: Chat, redis_server: EmbeddedRedis, policy_file: Path, workdir: Path) -> None:
    chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    chat.say("carol", "deploy-prd", "approve")
    env = settings_env(policy_file, redis_server.url, workdir, FORGE_TOKEN="ghp-secret-0001")
    done = releasegate("worker", "--burst", env=env)
    assert done.returncode == 0, done.stderr


def _only_the_bump_landed(origin: Remote, before: str) -> None:
    changed = git("diff", "--name-only", before, "main", cwd=origin.path).split()
    assert changed == ["env/prd/kustomization.yml"], changed
    diff = origin.diff(before)
    assert "+    newTag: 2.1.0" in diff, diff
    assert "6.6.6" not in diff, diff


@pytest.fixture
def bwrap() -> None:
    assert shutil.which("bwrap"), "bubblewrap is installed by .ci/run and scripts/test"


@pytest.mark.usefixtures("bwrap")
def test_a_validator_that_rewrites_the_pin_and_adds_a_file_changes_nothing_that_lands(
    chat: Chat,
    redis: Redis,
    redis_server: EmbeddedRedis,
    origin: Remote,
    policy_file: Path,
    tmp_path: Path,
) -> None:
    _with_validator(origin, tmp_path, REWRITE)
    _set_validate(policy_file, "sh validate.sh")
    before = origin.head()
    _deploy(chat, redis_server, policy_file, tmp_path / "worker")
    [report] = outbox(redis)
    assert "pushed" in report, report
    assert "2.0.0 -> 2.1.0" in report, report
    _only_the_bump_landed(origin, before)
    assert origin.count() == 3  # the seed, the writer's script, our one commit


@pytest.mark.usefixtures("bwrap")
def test_a_validator_that_replaces_dot_git_never_runs_code_in_the_worker(
    chat: Chat,
    redis: Redis,
    redis_server: EmbeddedRedis,
    origin: Remote,
    policy_file: Path,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "outside" / "fsmonitor-ran"
    marker.parent.mkdir()
    _with_validator(origin, tmp_path, REPLACE_GIT)
    _set_validate(policy_file, f"sh validate.sh {marker}")
    before = origin.head()
    _deploy(chat, redis_server, policy_file, tmp_path / "worker")
    assert not marker.exists(), "the validator's fsmonitor ran as the worker:\n" + (
        marker.read_text() if marker.exists() else ""
    )
    [report] = outbox(redis)
    assert "pushed" in report, report
    _only_the_bump_landed(origin, before)
    # The slot's .git is still the pointer file the worker wrote.
    [pointer] = (tmp_path / "worker").glob("*/*/slot-0/.git")
    assert pointer.is_file()
    assert pointer.read_text().startswith("gitdir: ")


def test_a_slot_found_with_settings_releasegate_never_writes_is_cloned_again(
    chat: Chat,
    redis: Redis,
    redis_server: EmbeddedRedis,
    origin: Remote,
    policy_file: Path,
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "worker"
    _deploy(chat, redis_server, policy_file, workdir)  # a first deploy makes the slot
    [store] = workdir.glob("*/*/store.git")
    marker = tmp_path / "fsmonitor-ran"
    hook = tmp_path / "fsmonitor.sh"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    hook.chmod(0o755)
    git("config", "--file", str(store / "config"), "core.fsmonitor", str(hook))
    git("config", "--file", str(store / "config"), "filter.evil.smudge", f"sh {hook}")
    (store / "objects" / "info" / "alternates").write_text("/nonexistent/objects\n")
    before = origin.head()
    chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int")
    env = settings_env(policy_file, redis_server.url, workdir)
    done = releasegate("worker", "--burst", env=env)
    assert done.returncode == 0, done.stderr
    assert "not as releasegate left it" in done.stderr, done.stderr
    assert not marker.exists()
    assert "fsmonitor" not in (store / "config").read_text()
    assert not (store / "objects" / "info" / "alternates").exists()
    assert git("diff", "--name-only", before, "main", cwd=origin.path).split() == [
        "env/int/kustomization.yml"
    ]


def test_a_commit_that_is_not_exactly_the_planned_change_is_never_pushed(
    origin: Remote, policy_file: Path, tmp_path: Path
) -> None:
    """The last check before a push: a commit changed after we made it (another file in it,
    other bytes in the pin) is refused, and the remote is untouched."""
    policy = parse_policy(policy_file.read_text())
    checkout = Checkout(policy.repository, tmp_path / "work")
    with checkout.in_slot():
        head = checkout.sync()
        text = checkout.read("env/int/kustomization.yml").replace("2.0.0", "2.1.0")
        checkout.write("env/int/kustomization.yml", text)
        checkout.commit("Deploy\n", {"env/int/kustomization.yml": text})
        checkout.verify_unpushed(head)  # exactly the plan: no complaint
        (checkout.path / "backdoor.yml").write_text("kind: Secret\n")
        env = {"GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@x", "GIT_COMMITTER_NAME": "x"}
        subprocess.run(["git", "add", "backdoor.yml"], cwd=checkout.path, check=True, env=_env(env))
        subprocess.run(
            ["git", "commit", "-q", "--amend", "--no-edit"],
            cwd=checkout.path,
            check=True,
            env=_env({**env, "GIT_COMMITTER_EMAIL": "x@x"}),
        )
        with pytest.raises(TamperedCommit, match="not a commit releasegate made"):
            checkout.verify_unpushed(head)
    assert origin.head() == head


def _env(more: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **more}


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        (
            [("100644", "100644", "b" * 40, "a.yml"), ("000000", "100644", "c" * 40, "x.yml")],
            "also changes x.yml",
        ),
        ([], "does not change a.yml"),
        ([("100644", "100755", "b" * 40, "a.yml")], "changes the mode of a.yml"),
        ([("100644", "100644", "d" * 40, "a.yml")], "a.yml does not hold the planned bytes"),
    ],
)
def test_a_diff_other_than_the_plan_is_named(
    entries: list[tuple[str, str, str, str]], why: str
) -> None:
    from workers.git.integrity import diff_problem

    assert diff_problem([("100644", "100644", "b" * 40, "a.yml")], {"a.yml": "b" * 40}) is None
    assert why in (diff_problem(entries, {"a.yml": "b" * 40}) or "")
