"""The deploy queue: RQ with the JSON serializer, one job per request, keyed by its id."""

from __future__ import annotations

import hashlib
import logging

from redis import Redis
from rq import Callback, Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.serializers import JSONSerializer

from workers import spans

log = logging.getLogger(__name__)

QUEUE_NAME = "releasegate"
JOB_TIMEOUT = 600  # a fetch, a validation and a push; each Git call has its own bound


def job_queue(redis: Redis) -> Queue:
    return Queue(QUEUE_NAME, connection=redis, serializer=JSONSerializer)


def enqueue_deploy(redis: Redis, request_id: str) -> bool:
    """Queue the request's job; False when it was already queued (enqueueing is idempotent)."""
    try:
        job_queue(redis).enqueue(
            "workers.jobs.run_request",
            request_id,
            job_id=request_id,
            unique=True,
            job_timeout=JOB_TIMEOUT,
            result_ttl=7 * 24 * 3600,
            failure_ttl=30 * 24 * 3600,
            # Only crashes reach RQ (our own errors end the request as failed):
            # retry those, then record the failure on the request.
            retry=Retry(max=2, interval=[10, 60]),
            on_failure=Callback("workers.jobs.on_job_failure"),
            description=f"deploy request {request_id}",
        )
    except DuplicateJobError:
        log.info("job %s already queued", request_id)
        return False
    spans.mark("enqueued", request_id)
    return True


def enqueue_records(redis: Redis, request_id: str) -> None:
    """Queue bringing the request's deployment records on the forge to its state; a forge
    that refuses is asked again with backoff (RQ's retries), never failing the deploy."""
    job_queue(redis).enqueue(
        "workers.jobs.record_deployments",
        request_id,
        job_timeout=120,
        result_ttl=3600,
        failure_ttl=7 * 24 * 3600,
        retry=Retry(max=6, interval=[2, 10, 30, 120, 600, 1800]),
        on_failure=Callback("workers.jobs.on_records_failure"),
        description=f"deployment records of {request_id}",
    )


def drain_job_id(lane: str) -> str:
    return "drain-" + hashlib.sha256(lane.encode()).hexdigest()[:16]


def enqueue_drain(redis: Redis, lane: str) -> bool:
    """Queue a job that takes over the lane and lands what its dead holder left running."""
    try:
        job_queue(redis).enqueue(
            "workers.jobs.drain_lane",
            job_id=drain_job_id(lane),
            unique=True,
            job_timeout=JOB_TIMEOUT,
            result_ttl=3600,
            failure_ttl=7 * 24 * 3600,
            description=f"take over the push lane {lane}",
        )
    except DuplicateJobError:
        return False
    return True


def enqueue_forge(redis: Redis, function: str, request_id: str) -> bool:
    """Queue a merge request job for the request: `open_change` or `close_change`."""
    name = function.rsplit("_", 1)[0]
    try:
        job_queue(redis).enqueue(
            f"workers.jobs.{function}",
            request_id,
            job_id=f"{name}-{request_id}",
            unique=True,
            job_timeout=JOB_TIMEOUT,
            result_ttl=24 * 3600,
            failure_ttl=7 * 24 * 3600,
            description=f"{name} the merge request of {request_id}",
        )
    except DuplicateJobError:
        return False
    return True
