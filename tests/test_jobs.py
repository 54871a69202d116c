"""The deploy job against a real bare remote, run by a real RQ worker."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from redis import Redis

from config.settings import Settings
from config.text import inert
from tests.conftest import Chat, Remote, git, outbox, run_worker
from workers.jobs import run_request
from workers.state.queue import enqueue_deploy
from workers.state.request import RequestState
from workers.state.store import RequestStore


def approved_prd_request(chat: Chat, version: str = "2.1.0") -> str:
    request_id = chat.say("alice", "deploy-prd", f"deploy awesome {version} to prd").request_id
    assert chat.say("carol", "deploy-prd", "approve").queued == (request_id,)
    return str(request_id)


def test_an_approved_request_is_pushed_with_its_audit_trail(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings
) -> None:
    base = origin.head()
    request_id = approved_prd_request(chat)
    run_worker(redis)
    assert RequestStore(redis).state(request_id) is RequestState.PUSHED
    assert origin.message() == (
        "Deploy awesome 2.1.0 to prd\n\n"
        "awesome: 2.0.0 -> 2.1.0 (prd)\n\n"
        f"Releasegate-Request: {request_id}\n"
        "Requested-by: shell:alice\n"
        "Approved-by: shell:carol\n\n"
    )
    assert git("log", "-1", "--format=%an <%ae>", cwd=origin.path).strip() == (
        "releasegate <releasegate@demo.invalid>"
    )
    result = RequestStore(redis).result(request_id)
    assert result is not None
    assert result.commit == origin.head()
    assert outbox(redis) == [
        f"{request_id}: pushed {origin.head()[:7]}: awesome: 2.0.0 -> 2.1.0 (prd)"
    ]
    changed = [line for line in origin.diff(base).splitlines() if line[:1] in "+-"]
    assert changed == [
        "--- a/env/prd/kustomization.yml",
        "+++ b/env/prd/kustomization.yml",
        "-    newTag: 2.0.0",
        "+    newTag: 2.1.0",
        "-      - appVersion=2.0.0",
        "+      - appVersion=2.1.0",
    ]


def test_running_the_job_twice_commits_once(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings
) -> None:
    request_id = approved_prd_request(chat)
    run_worker(redis)
    head = origin.head()
    # A retried job (its worker died after the push) finds its own trailer and stops.
    RequestStore(redis).transition(request_id, [RequestState.PUSHED], RequestState.RUNNING)
    assert run_request(request_id) == "pushed"
    assert origin.head() == head
    assert RequestStore(redis).result(request_id).commit == head  # type: ignore[union-attr]


def test_a_finished_request_is_not_run_again(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings
) -> None:
    request_id = approved_prd_request(chat)
    run_worker(redis)
    assert run_request(request_id) == "pushed"
    assert enqueue_deploy(redis, request_id) is False
    assert origin.count() == 2


def test_pins_already_at_the_version_commit_nothing(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings, tmp_path: Path
) -> None:
    request_id = approved_prd_request(chat)
    push_from_elsewhere(origin, tmp_path, "2.0.0", "2.1.0", "env/prd/kustomization.yml")
    head = origin.head()
    run_worker(redis)
    assert RequestStore(redis).state(request_id) is RequestState.NOOP
    assert origin.head() == head
    assert outbox(redis) == [f"{request_id}: nothing to do: awesome already runs 2.1.0 in prd"]


def test_a_pin_moved_since_approval_is_refused(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings, tmp_path: Path
) -> None:
    request_id = approved_prd_request(chat)
    push_from_elsewhere(origin, tmp_path, "2.0.0", "2.0.5", "env/prd/kustomization.yml")
    head = origin.head()
    run_worker(redis)
    assert RequestStore(redis).state(request_id) is RequestState.FAILED
    assert origin.head() == head
    assert (
        "awesome in prd is now 2.0.5, but the request approved 2.0.0 -> 2.1.0" in outbox(redis)[0]
    )


def push_from_elsewhere(origin: Remote, tmp_path: Path, old: str, new: str, file: str) -> None:
    """Another writer (a person, another tool) changes the remote."""
    clone = tmp_path / "elsewhere"
    if not clone.exists():
        git("clone", "--quiet", str(origin.path), str(clone))
    git("pull", "--quiet", cwd=clone)
    path = clone / file
    path.write_text(path.read_text().replace(old, new))
    git("-c", "user.name=human", "-c", "user.email=h@x", "commit", "-qam", "by hand", cwd=clone)
    git("push", "--quiet", "origin", "main", cwd=clone)


def test_a_push_that_loses_a_race_fetches_and_retries(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings, tmp_path: Path
) -> None:
    """A second writer pushes between our fetch and our push; we rebuild on top of theirs."""
    request_id = approved_prd_request(chat)
    # The remote's pre-receive hook lets another clone push first, once: a real race.
    other = tmp_path / "other"
    git("clone", "--quiet", str(origin.path), str(other))
    (other / "README.md").write_text("edited while releasegate was pushing\n")
    git("-c", "user.name=human", "-c", "user.email=h@x", "commit", "-qam", "racing", cwd=other)
    hook = origin.path / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        'if [ ! -e "$GIT_DIR/raced" ]; then\n'
        '  touch "$GIT_DIR/raced"\n'
        f"  env -u GIT_DIR -u GIT_QUARANTINE_PATH -u GIT_OBJECT_DIRECTORY"
        f" -u GIT_ALTERNATE_OBJECT_DIRECTORIES git -C {other} push --quiet origin main >&2\n"
        "fi\n"
    )
    hook.chmod(hook.stat().st_mode | stat.S_IEXEC)
    run_worker(redis)
    assert RequestStore(redis).state(request_id) is RequestState.PUSHED
    assert origin.count() == 3
    assert git("log", "-1", "--format=%s", "main~1", cwd=origin.path).strip() == "racing"
    assert origin.message().startswith("Deploy awesome 2.1.0 to prd")
    assert b"edited while releasegate was pushing" in origin.file("README.md")


def test_a_missing_pin_file_fails_the_request_and_says_so(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings, tmp_path: Path
) -> None:
    request_id = approved_prd_request(chat)
    clone = tmp_path / "elsewhere"
    git("clone", "--quiet", str(origin.path), str(clone))
    git("mv", "env/prd/kustomization.yml", "env/prd/kustomization.yaml", cwd=clone)
    git("-c", "user.name=h", "-c", "user.email=h@x", "commit", "-qm", "rename", cwd=clone)
    git("push", "--quiet", "origin", "main", cwd=clone)
    head = origin.head()
    run_worker(redis)
    assert RequestStore(redis).state(request_id) is RequestState.FAILED
    assert origin.head() == head
    assert outbox(redis) == [
        f"{request_id}: failed: env/prd/kustomization.yml does not exist in the repository"
    ]


def test_an_unreachable_remote_fails_the_request_with_the_reason(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings
) -> None:
    request_id = approved_prd_request(chat)
    moved = origin.path.with_name("moved.git")
    os.rename(origin.path, moved)
    try:
        run_worker(redis)
    finally:
        os.rename(moved, origin.path)
    assert RequestStore(redis).state(request_id) is RequestState.FAILED
    [report] = outbox(redis)
    # The thread says it inert (a remote's words are outside text): no live link in it.
    assert report.startswith(f"{request_id}: failed: cannot fetch main from {inert('file://')}")
    assert "does not appear to be a git repository" in report  # git's whole message
    assert origin.count() == 1


def test_a_remote_that_refuses_the_push_fails_without_retrying(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings
) -> None:
    request_id = approved_prd_request(chat)
    hook = origin.path / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n")
    hook.chmod(hook.stat().st_mode | stat.S_IEXEC)
    run_worker(redis)
    assert RequestStore(redis).state(request_id) is RequestState.FAILED
    [report] = outbox(redis)
    assert report.startswith(f"{request_id}: failed: the remote refused the push: ")
    assert "protected branch" in report or "pre-receive hook declined" in report
    assert origin.count() == 1


def test_a_cancelled_request_that_was_queued_does_nothing(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings
) -> None:
    request_id = approved_prd_request(chat)
    assert chat.say("alice", "deploy-prd", f"cancel {request_id}").ok
    run_worker(redis)
    assert RequestStore(redis).state(request_id) is RequestState.CANCELLED
    assert origin.count() == 1
    assert outbox(redis) == []


def test_a_change_next_to_the_approved_lines_asks_for_a_new_request(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings, tmp_path: Path
) -> None:
    """The pins still hold the old version, but the diff people approved no longer applies."""
    request_id = approved_prd_request(chat)
    push_from_elsewhere(
        origin,
        tmp_path,
        "configMapGenerator:",
        "configMapGenerator:  # edited",
        "env/prd/kustomization.yml",
    )
    head = origin.head()
    run_worker(redis)
    assert RequestStore(redis).state(request_id) is RequestState.FAILED
    assert "would not be the one shown and approved; ask again" in outbox(redis)[0]
    assert origin.head() == head


def test_an_unrelated_change_elsewhere_in_the_file_still_applies(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings, tmp_path: Path
) -> None:
    request_id = approved_prd_request(chat)
    push_from_elsewhere(
        origin,
        tmp_path,
        "kind: Kustomization\n",
        "kind: Kustomization\n# a new comment line\n",
        "env/prd/kustomization.yml",
    )
    run_worker(redis)
    assert RequestStore(redis).state(request_id) is RequestState.PUSHED


def with_validation(policy_file: Path, command: str) -> None:
    text = policy_file.read_text()
    line = f"    validate: {json.dumps(command)}\n"  # a JSON string is a YAML string
    policy_file.write_text(text.replace("    approval_ttl: 2h\n", "    approval_ttl: 2h\n" + line))


def test_a_failing_validation_command_stops_the_push_and_shows_its_output(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings, policy_file: Path, tmp_path: Path
) -> None:
    script = tmp_path / "tools" / "validate.py"
    script.write_text(
        "import sys\n"
        "text = open('env/prd/kustomization.yml').read()\n"
        "print(text.count('2.1.0'), 'pins changed')\n"
        "sys.exit(3)\n"
    )
    with_validation(policy_file, f"python3 {script}")
    request_id = approved_prd_request(chat)
    run_worker(redis)
    assert RequestStore(redis).state(request_id) is RequestState.FAILED
    [report] = outbox(redis)
    assert "failed (exit 3):\n2 pins changed" in report
    assert origin.count() == 1


def test_a_passing_validation_command_lets_the_push_through(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings, policy_file: Path
) -> None:
    with_validation(policy_file, 'python3 -c "import sys; sys.exit(0)"')
    request_id = approved_prd_request(chat)
    run_worker(redis)
    assert RequestStore(redis).state(request_id) is RequestState.PUSHED


def test_a_missing_validation_command_is_a_clear_failure(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings, policy_file: Path
) -> None:
    with_validation(policy_file, "no-such-validator env/prd")
    request_id = approved_prd_request(chat)
    run_worker(redis)
    assert outbox(redis) == [
        f"{request_id}: failed: validation command not found: no-such-validator env/prd"
    ]
    assert origin.count() == 1


def test_the_worker_checks_out_only_the_pinned_folders_unless_a_validation_needs_the_tree(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings, policy_file: Path
) -> None:
    """The pinned files' folders and the files at the top (a sparse-checkout cone), with a
    sparse index: the rest of the tree is neither on disk nor in the index."""
    import socket

    approved_prd_request(chat)
    run_worker(redis)
    [slot] = settings.workdir.glob(f"*/{socket.gethostname()}/slot-0")
    present = {
        str(p.relative_to(slot)) for p in slot.rglob("*") if p.is_file() and ".git" not in p.parts
    }
    assert {"env/int/kustomization.yml", "env/prd/kustomization.yml"} <= present
    assert not any(p.startswith("resources/") for p in present)
    indexed = git("ls-files", "--sparse", cwd=slot).splitlines()
    assert "resources/" in indexed  # one entry for the folder, not one per file
    assert not any(p.startswith("resources/") and p != "resources/" for p in indexed)
    with_validation(policy_file, 'python3 -c "import sys; sys.exit(0)"')
    approved_prd_request(chat, "2.2.0")
    run_worker(redis)
    assert (slot / "resources").is_dir()  # a validation command may read any file


def test_a_push_that_timed_out_but_landed_is_reported_as_pushed(
    chat: Chat,
    redis: Redis,
    origin: Remote,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The remote took the push, then the connection hung: ask the remote before deciding."""
    import workers.git.checkout

    monkeypatch.setattr(workers.git.checkout, "GIT_TIMEOUT", 3)
    hook = origin.path / "hooks" / "post-receive"
    hook.write_text("#!/bin/sh\nsleep 30\n")  # after the ref moved: the push itself hangs
    hook.chmod(hook.stat().st_mode | stat.S_IEXEC)
    request_id = approved_prd_request(chat)
    run_worker(redis)
    assert RequestStore(redis).state(request_id) is RequestState.PUSHED
    assert origin.count() == 2
    assert RequestStore(redis).result(request_id).commit == origin.head()  # type: ignore[union-attr]


def test_a_later_commit_with_an_old_date_does_not_hide_the_requests_own_commit(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings, tmp_path: Path
) -> None:
    request_id = approved_prd_request(chat)
    run_worker(redis)
    clone = tmp_path / "old-clock"
    git("clone", "--quiet", str(origin.path), str(clone))
    (clone / "README.md").write_text("edited on a machine whose clock says 2001\n")
    old = {"GIT_COMMITTER_DATE": "2001-01-01T00:00:00", "GIT_AUTHOR_DATE": "2001-01-01T00:00:00"}
    subprocess.run(
        ["git", "-c", "user.name=h", "-c", "user.email=h@x", "commit", "-qam", "old"],
        cwd=clone,
        check=True,
        env={**os.environ, **old},
    )
    git("push", "--quiet", "origin", "main", cwd=clone)
    # A retry of the job (its worker died before recording the outcome) finds its commit.
    RequestStore(redis).transition(request_id, [RequestState.PUSHED], RequestState.RUNNING)
    assert run_request(request_id) == "pushed"
    assert origin.count() == 3


def test_a_forged_trailer_does_not_count_as_the_retried_requests_commit(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings, tmp_path: Path
) -> None:
    """A retried job looks for its own commit by its trailer; another writer's commit with the
    same trailer (and another change) is not taken for it."""
    request_id = approved_prd_request(chat)
    RequestStore(redis).mark_pushing([request_id])  # as if a worker died around its push
    clone = tmp_path / "outside"
    git("clone", "--quiet", str(origin.path), str(clone))
    (clone / "resources" / "backdoor.yml").write_text("kind: Pod\n")
    git("add", "resources/backdoor.yml", cwd=clone)
    message = f"innocent\n\nReleasegate-Request: {request_id}\nApproved-by: shell:carol\n"
    git(
        "-c",
        "user.name=releasegate",
        "-c",
        "user.email=releasegate@demo.invalid",
        "commit",
        "-qm",
        message,
        cwd=clone,
    )
    git("push", "--quiet", "origin", "main", cwd=clone)
    forged = origin.head()
    run_worker(redis)
    assert RequestStore(redis).state(request_id) is RequestState.PUSHED
    result = RequestStore(redis).result(request_id)
    assert result is not None
    assert result.commit == origin.head() != forged
    assert b"newTag: 2.1.0" in origin.file("env/prd/kustomization.yml")


def missing_blobs(store: Path) -> int:
    listed = git("rev-list", "--objects", "--all", "--missing=print", cwd=store)
    return sum(1 for line in listed.splitlines() if line.startswith("?"))


@pytest.mark.parametrize("filters", [True, False], ids=["blobless", "refused: full clone"])
def test_the_workers_first_clone_is_blobless_where_the_remote_allows_and_full_where_not(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings, filters: bool
) -> None:
    git("config", "uploadpack.allowFilter", "true" if filters else "false", cwd=origin.path)
    request_id = approved_prd_request(chat)
    run_worker(redis)
    assert RequestStore(redis).state(request_id) is RequestState.PUSHED
    [store] = settings.workdir.glob("*/*/store.git")
    if filters:
        assert missing_blobs(store) > 0  # resources/, env/int: never needed, never fetched
    else:
        assert missing_blobs(store) == 0
    second = approved_prd_request(chat, "2.2.0")  # and the next deploy from the same store
    run_worker(redis)
    assert RequestStore(redis).state(second) is RequestState.PUSHED


def test_a_request_whose_app_the_policy_no_longer_pins_fails_and_commits_nothing(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings, policy_file: Path
) -> None:
    request_id = approved_prd_request(chat)
    text = policy_file.read_text()
    start = text.index("      prd:\n        - {file: env/prd/kustomization.yml")
    end = text.index("\n", text.index("configmap_literal", start)) + 1
    policy_file.write_text(text[:start] + text[end:])
    run_worker(redis)
    assert RequestStore(redis).state(request_id) is RequestState.FAILED
    [told] = outbox(redis)
    assert "the policy no longer pins awesome in prd; nothing landed" in told
    assert origin.count() == 1
