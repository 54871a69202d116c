"""Requests a dead worker left behind are queued again, and still commit once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from bot.embedded_redis import EmbeddedRedis
from config.settings import Settings
from tests.conftest import Chat, Remote, eventually, run_worker, sandbox_tools
from workers.landing.sweeper import DEAD_AFTER, sweep
from workers.state.lane import Lane, lane_name
from workers.state.queue import job_queue
from workers.state.request import RequestState
from workers.state.store import RequestStore

LATER = DEAD_AFTER + 1  # seconds after which a silent worker is taken for dead


def validating(marker: str) -> bool:
    """Whether a process whose command line holds `marker` runs (a validator started)."""
    table = subprocess.run(["ps", "-A", "-o", "args="], capture_output=True, text=True).stdout
    return any(marker in line for line in table.splitlines())


def kill_tree(root: int) -> None:
    """SIGKILL a process and every descendant, as a node's sudden death would."""
    table = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in table.splitlines():
        pid, ppid = (int(x) for x in line.split())
        children.setdefault(ppid, []).append(pid)
    doomed, todo = [], [root]
    while todo:
        pid = todo.pop()
        doomed.append(pid)
        todo.extend(children.get(pid, []))
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def lane_of(chat: Chat) -> Lane:
    return Lane(chat.conversation.store.redis, lane_name(chat.conversation.policy.repository))


def queued_int_request(chat: Chat) -> str:
    reply = chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to int")
    assert reply.queued
    return str(reply.request_id)


def test_a_worker_killed_mid_job_leaves_nothing_pushed_and_the_request_runs_again(
    chat: Chat,
    redis: Redis,
    origin: Remote,
    policy_file: Path,
    tmp_path: Path,
    redis_server: EmbeddedRedis,
) -> None:
    request_id = queued_int_request(chat)
    original = policy_file.read_text()
    # The validation step hangs, so the worker is surely mid-job when it is killed.
    command = 'python3 -c "import time; time.sleep(60.25)"'
    hang = f"    validate: {json.dumps(command)}\n"
    policy_file.write_text(
        original.replace(
            '    channels: ["shell:deploy-int"]\n', '    channels: ["shell:deploy-int"]\n' + hang
        )
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")},
        "RELEASEGATE_POLICY": str(policy_file),
        "RELEASEGATE_REDIS_URL": redis_server.url,
        "RELEASEGATE_WORKDIR": str(tmp_path / "work"),
        "RELEASEGATE_VALIDATE_READONLY": sandbox_tools(tmp_path),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = RequestStore(redis)
    assert eventually(lambda: store.state(request_id) is RequestState.RUNNING, 60, every=0.1), (
        "the worker never started the job"
    )
    assert eventually(lambda: validating("time.sleep(60.25)"), 30, every=0.1), (
        "the validation command never ran"
    )
    kill_tree(worker.pid)  # the worker, its scheduler, git
    worker.wait()
    assert origin.count() == 1
    assert store.state(request_id) is RequestState.RUNNING

    lane = lane_of(chat)
    assert sweep(redis, lane) == []  # too early to tell a slow job from a dead one
    # The dead holder's lease runs out within seconds.
    assert eventually(lambda: lane.holder() is None, 30), "the dead worker's lease never expired"
    assert sweep(redis, lane) == [request_id]  # nobody holds its lane: a drain job is queued
    policy_file.write_text(original)
    run_worker(redis)
    assert store.state(request_id) is RequestState.PUSHED
    assert origin.count() == 2


def test_a_request_pushed_before_its_worker_died_is_not_committed_twice(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings
) -> None:
    request_id = queued_int_request(chat)
    run_worker(redis)
    store = RequestStore(redis)
    # As if the worker died between the push and recording the outcome.
    store.transition(request_id, [RequestState.PUSHED], RequestState.RUNNING)
    assert sweep(redis, lane_of(chat)) == [request_id]
    run_worker(redis)
    assert store.state(request_id) is RequestState.PUSHED
    assert origin.count() == 2


def test_an_approved_request_whose_job_vanished_is_queued_again(
    chat: Chat, redis: Redis, origin: Remote, settings: Settings
) -> None:
    request_id = queued_int_request(chat)
    Job.fetch(request_id, connection=redis, serializer=JSONSerializer).delete()
    assert job_queue(redis).count == 0
    assert sweep(redis, lane_of(chat)) == [request_id]
    assert job_queue(redis).job_ids == [request_id]
    run_worker(redis)
    assert RequestStore(redis).state(request_id) is RequestState.PUSHED


def test_waiting_and_finished_requests_are_left_alone(
    chat: Chat, redis: Redis, settings: Settings
) -> None:
    queued = queued_int_request(chat)
    pending = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id
    assert sweep(redis, lane_of(chat), now=time.time() + LATER) == []
    run_worker(redis)
    assert sweep(redis, lane_of(chat), now=time.time() + LATER) == []
    store = RequestStore(redis)
    assert store.active() == []
    assert store.state(queued) is RequestState.PUSHED
    assert store.state(str(pending)) is RequestState.PENDING
