"""The GitOps remote gone, slow, refusing, or pushed to by others while we push."""

from __future__ import annotations

import shutil
import stat
import subprocess
import threading
import time

from tests.conftest import git
from tests.faults.world import World, check_invariants
from workers.state.request import RequestState


def hook(world: World, name: str, body: str) -> None:
    path = world.origin.path / "hooks" / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_a_remote_that_is_gone_fails_the_request_with_a_clear_answer_and_commits_nothing(
    world: World,
) -> None:
    request_id = world.request(0)
    away = world.tmp / "moved-away.git"
    world.start_worker()
    world.origin.path.rename(away)
    try:
        world.approve_all(request_id)
        world.wait_ended([request_id])
    finally:
        away.rename(world.origin.path)
    check_invariants(world, [request_id], expect=RequestState.FAILED)
    result = world.store.result(request_id)
    assert result is not None
    assert "could not reach" in result.message or "does not appear" in result.message, result
    assert world.origin.count() == 1


def test_a_slow_remote_still_takes_every_request_once(world: World) -> None:
    hook(world, "pre-receive", "sleep 4")
    ids = [world.request(n) for n in range(3)]
    world.start_worker()
    for request_id in ids:
        world.approve_all(request_id)
    world.wait_ended(ids)
    check_invariants(world, ids, expect=RequestState.PUSHED)
    assert world.origin.count() == 1 + 3


def test_a_remote_that_refuses_fails_the_request_with_its_words_and_commits_nothing(
    world: World,
) -> None:
    hook(
        world,
        "pre-receive",
        'echo "GH006: Protected branch update failed for refs/heads/main" >&2\nexit 1',
    )
    request_id = world.request(0)
    world.start_worker()
    world.approve_all(request_id)
    world.wait_ended([request_id])
    check_invariants(world, [request_id], expect=RequestState.FAILED)
    result = world.store.result(request_id)
    assert result is not None
    assert "refused" in result.message, result.message
    assert "Protected branch update failed" in result.message, result.message
    assert world.origin.count() == 1


def test_an_outside_writer_pushing_all_along_loses_nothing_and_every_request_lands_once(
    world: World,
) -> None:
    clone = world.tmp / "outside"
    git("clone", "--quiet", str(world.origin.path), str(clone))
    stop = threading.Event()
    pushed: list[int] = []

    def outside_writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            (clone / "README.md").write_text(f"edit {n}\n")
            git("add", "README.md", cwd=clone)
            git(
                "-c", "user.name=o", "-c", "user.email=o@x", "commit", "-qm", f"edit {n}", cwd=clone
            )
            try:
                git("push", "--quiet", "origin", "main", cwd=clone)
                pushed.append(n)
            except subprocess.CalledProcessError:  # we won that race: take ours and go on
                git("pull", "--quiet", "--rebase", "origin", "main", cwd=clone)
            # A busy outside writer: a push about every second. One pushing several times a
            # second beats every attempt on a loaded 2-core host, where fetching, committing
            # and pushing take longer than its beat: those requests end `kept_moving` after
            # 50 attempts, saying so (the note names this limit).
            time.sleep(0.8)

    writer = threading.Thread(target=outside_writer, daemon=True)
    ids = [world.request(n) for n in range(6)]
    writer.start()
    try:
        world.start_worker()
        world.start_worker()
        for request_id in ids:
            world.approve_all(request_id)
        # What is asked is that nothing is lost and each lands once, not how fast: a busy
        # host beside this test (another suite on two cores) makes every race slower.
        world.wait_ended(ids, timeout=300)
    finally:
        stop.set()
        writer.join(timeout=30)
    check_invariants(world, ids, expect=RequestState.PUSHED)
    log = git("log", "--format=%s", "main", cwd=world.origin.path)
    assert all(f"edit {n}" in log.splitlines() for n in pushed)  # no outside commit lost
    assert pushed, "the outside writer never pushed"
    shutil.rmtree(clone)
