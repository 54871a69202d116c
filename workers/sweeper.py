"""Find requests a dead worker left behind, and queue them again.

RQ notices a job whose worker was killed only at a later registry clean-up.
releasegate keeps its own state instead: a request still `running` longer
than a job may run (RQ kills the work horse at its timeout), or `approved`
with no job left in RQ, has lost its worker. It is queued again; the job is
idempotent (its commit trailer), so a push that did happen is found and not
repeated.
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from workers.queue import JOB_TIMEOUT, enqueue_deploy
from workers.request import RequestState
from workers.store import RequestStore

log = logging.getLogger(__name__)

GRACE_SECONDS = 120
WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def _job(redis: Redis, request_id: str) -> Job | None:
    try:
        return Job.fetch(request_id, connection=redis, serializer=JSONSerializer)
    except NoSuchJobError:
        return None


def sweep(redis: Redis, now: float | None = None) -> list[str]:
    """Queue again every request a worker lost; returns their ids."""
    store = RequestStore(redis)
    now = time.time() if now is None else now
    requeued = []
    for request_id in store.active():
        state = store.state(request_id)
        job = _job(redis, request_id)
        status = job.get_status() if job else None
        if status in WAITING:
            continue  # waiting for a worker, or for RQ's retry
        if state is RequestState.RUNNING:
            if now - store.state_since(request_id) < JOB_TIMEOUT + GRACE_SECONDS:
                continue  # a worker may still be on it
        elif status is JobStatus.STARTED:
            continue
        log.warning("request %s is %s but no worker has it; queueing it again", request_id, state)
        if job is not None:
            job.delete()
        enqueue_deploy(redis, request_id)
        requeued.append(request_id)
    return requeued
