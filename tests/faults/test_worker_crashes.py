"""kill -9 a worker at each point of a deploy: the next worker finishes, nothing lands twice."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import eventually
from tests.faults.world import World, check_invariants
from workers.git.history import TRAILER_SCAN_DEPTH
from workers.state.outbox import report_to
from workers.state.request import RequestState, Result


def hang_in_hook(world: World, hook: str) -> Path:
    """Make the remote hang in `hook` (after touching a marker file); returns the marker."""
    marker = world.tmp / f"in-{hook}"
    path = world.origin.path / "hooks" / hook
    path.write_text(f"#!/bin/sh\ntouch {marker}\nsleep 120\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return marker


def hang_in_validation(world: World) -> Path:
    """Make the environment's validation hang, after the pins are written, before the commit."""
    marker = world.tmp / "in-validate"
    script = world.tmp / "hang.py"
    script.write_text(
        f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(120)\n"
    )
    world.set_policy(validate=f"{sys.executable} {script}")
    return marker


def reached(world: World, marker: Path) -> None:
    """Wait until a worker touched `marker` (it hangs there now)."""
    assert eventually(lambda: marker.exists(), 60, every=0.1), (
        "the worker never got there: " + world.tail()
    )


@pytest.mark.parametrize("point", ["before-commit", "before-push", "after-push"])
def test_a_worker_killed_at_any_point_is_replaced_and_every_request_lands_once(
    world: World, point: str
) -> None:
    ids = [world.request(n) for n in range(3)]
    if point == "before-commit":
        marker = hang_in_validation(world)
    else:  # the commits are made; the remote hangs before taking them, or after
        marker = hang_in_hook(world, "pre-receive" if point == "before-push" else "post-receive")
    first = world.start_worker()
    for request_id in ids:
        world.approve_all(request_id)
    reached(world, marker)
    world.kill_worker(first)
    assert world.origin.count() == (1 + 3 if point == "after-push" else 1)
    for hook in ("pre-receive", "post-receive"):
        (world.origin.path / "hooks" / hook).unlink(missing_ok=True)
    world.set_policy()

    world.start_worker()
    world.wait_ended(ids)
    check_invariants(world, ids, expect=RequestState.PUSHED)
    assert world.origin.count() == 1 + 3


def test_the_end_of_a_request_and_the_news_for_its_channel_are_one_write(world: World) -> None:
    """No crash point exists between recording an outcome and queueing its report."""
    request_id = world.request(0)
    store, request = world.store, world.store.get(request_id)
    ended = Result(state=RequestState.CANCELLED, message="x", finished_at=request.created_at)
    entries = world.redis.xlen(report_to(request))
    assert store.finish(request_id, [RequestState.PENDING], ended, report_to(request))
    assert world.redis.xlen(report_to(request)) == entries + 1
    # Ending it again does nothing, and tells nobody a second time.
    assert not store.finish(request_id, [RequestState.PENDING], ended, report_to(request))
    assert world.redis.xlen(report_to(request)) == entries + 1


def outside_commits(remote: Path, count: int) -> None:
    """`count` commits by somebody else on the remote's main, written by `git fast-import`
    (thousands in a second), each touching a file no pin reads."""
    lines = []
    for n in range(count):
        body = f"outside {n}\n".encode()
        lines += [
            b"commit refs/heads/main\n",
            b"committer Someone Else <else@example.invalid> 1700000000 +0000\n",
            b"data 7\noutside\n",
            *([b"from refs/heads/main^0\n"] if n == 0 else []),
            b"M 100644 inline outside.txt\n",
            b"data %d\n%s\n" % (len(body), body),
        ]
    subprocess.run(["git", "fast-import", "--quiet"], cwd=remote, input=b"".join(lines), check=True)


def test_a_push_further_back_than_the_last_two_thousand_commits_is_still_found(
    world: World,
) -> None:
    """The worker died after its push, and the branch moved on by more commits than the
    depth-bounded search reads before another took over: the search reads back to the head
    the request was read at, however far, and the request lands once."""
    request_id = world.request(0)
    marker = hang_in_hook(world, "post-receive")
    first = world.start_worker()
    world.approve_all(request_id)
    reached(world, marker)
    world.kill_worker(first)
    (world.origin.path / "hooks" / "post-receive").unlink()
    outside_commits(world.origin.path, TRAILER_SCAN_DEPTH + 100)
    world.start_worker()
    world.wait_ended([request_id])
    check_invariants(world, [request_id], expect=RequestState.PUSHED)
    assert world.origin.count() == 1 + 1 + TRAILER_SCAN_DEPTH + 100
