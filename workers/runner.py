"""`releasegate worker`: an RQ worker that outlives Redis restarts.

RQ's worker quits on the first Redis error it meets. Here the process stays:
it waits until Redis answers again and starts a fresh RQ worker, so a Redis
restart is not turned into a crash loop of every worker pod. Between jobs a
sweeper thread on its own connection finds requests a dead worker left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from contextlib import ExitStack
from functools import partial

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.serializers import JSONSerializer

import workers.jobs  # noqa: F401 - imported at start, not at the first job
from config.errors import ReleasegateError
from config.policy import Policy, load_policy
from config.settings import Settings
from workers.git.checkout import Checkout
from workers.git.mirrors import Mirrors
from workers.git.signing import Signer, require_key
from workers.horse import FRESH_AFTER, StayingWorker
from workers.landing import mergerequests
from workers.landing.batch import reader
from workers.landing.sweeper import HEARTBEAT_INTERVAL, SWEEP_EVERY, sweep
from workers.records import deployments
from workers.rollout import follow
from workers.rollout import verify as verification
from workers.rules.plan import checkout_paths, current_versions
from workers.state.connection import connect
from workers.state.lane import Lane, lane_name
from workers.state.queue import job_queue
from workers.supervisor import Supervisor

log = logging.getLogger(__name__)

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)
MAX_WAIT = 5.0


def run(settings: Settings, burst: bool = False, fresh_after: int = FRESH_AFTER) -> int:
    policy = load_policy(settings.policy)  # fail at start, not at the first job
    signer = Signer.from_setting(settings.git_signing_key)
    for repository in policy.repositories.values():
        require_key(repository, signer)
    redis = connect(settings)
    lanes = [Lane(redis, lane_name(repo)) for repo in policy.repositories.values()]
    stop = threading.Event()
    try:
        sweep(redis, lanes)
    except REDIS_ERRORS as exc:
        log.warning("Redis does not answer (%s); waiting for it", exc)
        wait_for_redis(redis, stop)
    _warm(policy, settings)
    if not burst:
        # Between jobs too: a lane whose holder died is taken over within seconds.
        # On a client of its own: a sweep never waits for a connection a job holds.
        own = connect(settings)
        sweeper_lanes = [Lane(own, lane.name) for lane in lanes]
        supervisor = Supervisor()
        supervisor.start("sweeper", lambda: _sweep_round(own, sweeper_lanes), stop)
        # Following rollouts: a look every few seconds, on a connection of its own too.
        follower = connect(settings)
        # Told what our workers pushed last: a rollback is planned on the newest head.
        mirrors = Mirrors.of(
            policy,
            settings.workdir,
            access=settings.git_access(),
            pushed=lambda repo: Lane(follower, lane_name(repo)).pushed,
        )
        token = settings.argocd_token.get_secret_value() if settings.argocd_token else None
        supervisor.start(
            "rollouts",
            lambda: follow.follow_round(
                follower,
                lambda: load_policy(settings.policy),
                settings.argocd_url,
                token,
                mirrors.is_ancestor_anywhere,
                ended=partial(deployments.note, follower),
            ),
            stop,
        )
        # Verifying what rolled out, and the promotions whose soak ended: a round a second.
        prometheus = settings.prometheus_token
        supervisor.start(
            "verifications",
            lambda: verification.verify_round(
                follower,
                lambda: load_policy(settings.policy),
                prometheus.get_secret_value() if prometheus else None,
                mirrors.snapshot,
                ended=partial(deployments.note, follower),
            ),
            stop,
        )
        # The checks of merge requests waiting for approval, for their cards and threads.
        supervisor.start(
            "forge-checks",
            lambda: mergerequests.checks_round(
                follower, lambda: load_policy(settings.policy), settings
            ),
            stop,
        )
    try:
        while True:
            worker: StayingWorker | None = None
            try:
                worker = StayingWorker(
                    [job_queue(redis)],
                    connection=redis,
                    serializer=JSONSerializer,
                    job_monitoring_interval=HEARTBEAT_INTERVAL,
                )
                worker.work(
                    burst=burst, with_scheduler=True, logging_level="INFO", max_jobs=fresh_after
                )
            except REDIS_ERRORS as exc:  # at its start, or in RQ's clean-up after an outage
                log.warning("the worker met a Redis error: %s", exc)
            if worker is not None and worker.jobs_run >= fresh_after:
                start_afresh(worker.jobs_run)
            # RQ notes the time of a SIGTERM or SIGINT (a stop asked for, idle or busy); any
            # other way out of `work()` is an error RQ gave up on, in practice Redis gone.
            if burst or (worker is not None and worker._shutdown_requested_date is not None):
                return 0
            log.warning("the worker lost Redis; it starts again once Redis answers")
            wait_for_redis(redis, stop)
    finally:
        stop.set()


def start_afresh(done: int) -> None:
    """Replace this process by a new run of the same command (same process id: the pod
    sees nothing)."""
    log.info("%d jobs done: the worker starts afresh", done)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)  # noqa: S606 - our own command line, again


def wait_for_redis(redis: Redis, stop: threading.Event) -> None:
    wait = 0.5
    while not stop.is_set():
        with contextlib.suppress(*REDIS_ERRORS):
            if redis.ping():
                log.info("Redis answers again")
                return
        stop.wait(wait)
        wait = min(MAX_WAIT, wait * 2)


def _warm(policy: Policy, settings: Settings) -> None:
    """Clone now, so the first job does not wait for one, and read every pin once: the jobs
    run in this process, and start with the parsers warm and the unchanged files' pins
    already located."""
    checkouts = {
        name: Checkout(
            repository,
            settings.workdir,
            access=repository.access(settings.git_access()),
            paths=checkout_paths(policy, name),
        )
        for name, repository in policy.repositories.items()
    }
    try:
        with ExitStack() as slots:
            for name, checkout in checkouts.items():
                for gone in checkout.prune_gone_hosts():
                    log.info("removed the clones of a host gone for a week: %s", gone)
                slots.enter_context(checkout.in_slot())
                log.info("repository %s at %s in %s", name, checkout.sync()[:7], checkout.path)
            for app_name, app in policy.apps.items():
                for env_name in app.pins:
                    with contextlib.suppress(ReleasegateError):
                        current_versions(policy, reader(checkouts), app_name, env_name)
    except ReleasegateError as exc:  # the jobs will say so where people see it
        log.warning("could not prepare a clone yet: %s", exc)


def _sweep_round(redis: Redis, lanes: list[Lane]) -> float:
    sweep(redis, lanes)
    return SWEEP_EVERY
