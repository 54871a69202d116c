"""Find requests a dead worker left behind, and queue them again.

RQ notices a job whose worker was killed only at a later registry clean-up.
releasegate keeps its own state instead, and asks two signs of life: RQ's
worker heartbeat for a started job, and the push lane's lease for a running
request. A request `approved` with no live job, or `running` while nobody
holds its lane and no live worker has its job, has lost its worker: it is
queued again. The job is idempotent (its commit trailer), so a push that
did happen is found and not repeated.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.worker import Worker

from workers.lane import Lane
from workers.queue import enqueue_deploy
from workers.request import RequestState
from workers.store import RequestStore

log = logging.getLogger(__name__)

# `releasegate worker` beats every 15 s while a job runs (RQ's job_monitoring_interval):
# a worker silent for longer than this is dead.
HEARTBEAT_INTERVAL = 15
DEAD_AFTER = 45
WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def _job(redis: Redis, request_id: str) -> Job | None:
    try:
        return Job.fetch(request_id, connection=redis, serializer=JSONSerializer)
    except NoSuchJobError:
        return None


def _worker_alive(redis: Redis, job: Job, now: float) -> bool:
    if not job.worker_name:
        return False
    worker = Worker.find_by_key(
        Worker.redis_worker_namespace_prefix + job.worker_name, connection=redis
    )
    if worker is None or worker.last_heartbeat is None:
        return False
    beat = worker.last_heartbeat.replace(tzinfo=UTC).timestamp()
    return now - beat < DEAD_AFTER


def sweep(redis: Redis, lane: Lane | None = None, now: float | None = None) -> list[str]:
    """Queue again every request a worker lost; returns their ids."""
    now = time.time() if now is None else now
    store = RequestStore(redis)
    requeued = []
    for request_id in store.active():
        state = store.state(request_id)
        job = _job(redis, request_id)
        status = job.get_status() if job else None
        if status in WAITING:
            continue  # waiting for a worker, or for RQ's retry
        if state is RequestState.RUNNING and lane is not None and lane.holder() is not None:
            continue  # the lane's holder has it in its batch
        if status is JobStatus.STARTED and job is not None and _worker_alive(redis, job, now):
            continue  # its job is waiting for the lane, or running
        log.warning("request %s is %s but no worker has it; queueing it again", request_id, state)
        if job is not None:
            job.delete()
        enqueue_deploy(redis, request_id)
        requeued.append(request_id)
    return requeued
