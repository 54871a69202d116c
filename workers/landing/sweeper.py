"""Find requests a dead worker left behind, and see that they land.

RQ notices a job whose worker was killed only at a later registry clean-up.
releasegate asks two signs of life instead. A request `running` is in the
batch of the push lane's holder: if nobody holds the lane (and nobody takes
it within a moment, as a waiting job would), the holder died, and a job that
drains the lane is queued. A request `approved` whose job is gone, ended, or
started by a worker whose RQ heartbeat stopped gets its job queued again.
Either way the commit trailer keeps a push that did happen from happening
twice. The same two checks find a request whose end only a lost Redis master
knew of: after a failover it is `running` again, with no holder. Workers
sweep when they start and every few seconds while they run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.worker import Worker

from workers.state.lane import Lane
from workers.state.queue import enqueue_deploy, enqueue_drain
from workers.state.request import RequestState
from workers.state.store import RequestStore

log = logging.getLogger(__name__)

# `releasegate worker` beats every 15 s while a job runs (RQ's job_monitoring_interval):
# a worker silent for longer than this is dead.
HEARTBEAT_INTERVAL = 15
DEAD_AFTER = 45
SWEEP_EVERY = 5.0
TAKE_OVER_GRACE = 1.0  # a waiting job takes a free lane within a tenth of this
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
    return now - worker.last_heartbeat.replace(tzinfo=UTC).timestamp() < DEAD_AFTER


def _lanes_abandoned(lanes: Sequence[Lane]) -> bool:
    """Nobody holds any lane (and nobody takes one within a moment, as a waiting job would):
    a running request's batch lost its holder."""
    if any(lane.holder() is not None for lane in lanes):
        return False
    time.sleep(TAKE_OVER_GRACE)
    return all(lane.holder() is None for lane in lanes)


def sweep(redis: Redis, lanes: Lane | Sequence[Lane], now: float | None = None) -> list[str]:
    """Queue what lost its worker; returns the ids of the requests concerned."""
    now = time.time() if now is None else now
    store = RequestStore(redis)
    found = []
    running = []
    for request_id in store.active():
        state = store.state(request_id)
        if state is RequestState.RUNNING:
            running.append(request_id)
            continue
        if store.not_before(request_id) > now:
            continue  # the forge refused its merge for now; tried again after the wait
        job = _job(redis, request_id)
        status = job.get_status() if job else None
        if status in WAITING:
            continue  # waiting for a worker, or for RQ's retry
        if status is JobStatus.STARTED and job is not None and _worker_alive(redis, job, now):
            continue  # waiting for the lane, or in it
        log.warning("request %s is approved but no worker has it; queueing it again", request_id)
        if job is not None:
            job.delete()
        enqueue_deploy(redis, request_id)
        found.append(request_id)
    lanes = [lanes] if isinstance(lanes, Lane) else list(lanes)
    if running and _lanes_abandoned(lanes):
        log.warning(
            "requests %s are running but nobody holds their lane (the worker died, or a "
            "failover lost how it ended); taking over",
            ", ".join(running),
        )
        enqueue_drain(redis, lanes[0].name)
        found += running
    return found
