"""The worker runs jobs in its own process (no fork per job) and keeps what a work horse
gave: a job's exception ends the job, heartbeats go on while a job runs, and after its
share of jobs the worker starts afresh in the same process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from redis import Redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from bot.embedded_redis import EmbeddedRedis
from tests.conftest import Chat, eventually, run_worker
from tests.test_cli import settings_env
from tests.test_jobs import approved_prd_request
from tests.test_sweeper import kill_tree
from workers.horse import StayingWorker
from workers.state.queue import job_queue
from workers.state.request import RequestState
from workers.state.store import RequestStore


def test_a_job_that_raises_ends_itself_and_the_next_job_runs_in_the_same_worker(
    chat: Chat, redis: Redis
) -> None:
    broken = job_queue(redis).enqueue("workers.jobs.run_request", "RNOSUCH")
    request_id = approved_prd_request(chat)
    run_worker(redis)  # one worker, both jobs, no fork between them
    assert Job.fetch(broken.id, connection=redis).get_status() is JobStatus.FAILED
    assert RequestStore(redis).state(request_id) is RequestState.PUSHED


def test_heartbeats_go_on_while_a_job_runs(redis: Redis) -> None:
    """The sweeper takes a worker whose heartbeat stopped for dead: a long job must not
    look like one."""
    job_queue(redis).enqueue("time.sleep", 1.5)
    worker = StayingWorker(
        [job_queue(redis)], connection=redis, serializer=JSONSerializer, job_monitoring_interval=0.2
    )
    beats: set[bytes] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            if redis.hget(worker.key, "state") == b"busy":
                beats.add(redis.hget(worker.key, "last_heartbeat") or b"")

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        worker.work(burst=True)
    finally:
        stop.set()
        watcher.join()
    assert len(beats) >= 4, beats  # one before the job, then one every 0.2 s of its 1.5 s


def test_after_its_share_of_jobs_the_worker_starts_afresh_in_the_same_process(
    chat: Chat, redis: Redis, tmp_path: Path, policy_file: Path, redis_server: EmbeddedRedis
) -> None:
    env = settings_env(policy_file, redis_server.url, tmp_path / "w")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")}
    log = tmp_path / "worker.log"
    program = (
        "import sys; from config.settings import Settings; from workers.logs import "
        "setup_logging; from workers.runner import run; setup_logging('json'); "
        "sys.exit(run(Settings(), fresh_after=2))"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", program],
        env={**clean, **env, "PYTHONUNBUFFERED": "1"},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    store = RequestStore(redis)
    try:
        ids = []
        for version in ("2.1.0", "2.2.0", "2.3.0"):
            ids.append(approved_prd_request(chat, version))
            assert eventually(lambda: store.state(ids[-1]).final, 60, every=0.1), log.read_text()[
                -3000:
            ]
        assert worker.poll() is None  # the same process, its program replaced
    finally:
        kill_tree(worker.pid)
        worker.wait()
    assert [store.state(i) for i in ids] == [RequestState.PUSHED] * 3
    said = log.read_text()
    assert said.count("2 jobs done: the worker starts afresh") == 1, said[-3000:]


def test_a_burst_worker_leaves_at_once_not_after_its_command_channels_wait(redis: Redis) -> None:
    """redis-py 8's `stop()` waits for the command channel's reader, which slept a minute once
    unsubscribed: every `--burst` worker, and every shutdown, could hang that long."""

    from workers.horse import PUBSUB_WAKE, StayingWorker
    from workers.state.queue import job_queue

    for _round in range(3):
        started = time.monotonic()
        StayingWorker([job_queue(redis)], connection=redis, serializer=JSONSerializer).work(
            burst=True
        )
        assert time.monotonic() - started < PUBSUB_WAKE + 10
