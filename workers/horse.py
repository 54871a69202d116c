"""The work horse that stays: RQ's worker running each job in its own process, not a fork.

RQ forks a work horse per job, so that whatever a job does to its process dies with it.
On the deploy path the fork, the horse's set-up and its exit cost more than a commit
(`scripts/bench.py`'s breakdown showed 9 ms of about 110), and the horse throws away what
the worker warmed: the parsed pins, the open connection. releasegate's jobs leave nothing
behind them (their git runs in subprocesses, their threads stop with the job, nothing
changes the process's directory, environment or signals), so the worker runs them itself,
and keeps for itself what a horse gave:

- an exception ends the job, not the worker (RQ records it; our failure callback ends the
  request);
- a job over its timeout is interrupted (RQ's SIGALRM penalty, in this main thread);
- RQ's heartbeats go on while a job runs, from a thread here (the forking worker sent them
  while it waited for the horse), so the sweeper never mistakes a long job for a dead one;
- a job that kills the process (the kernel's OOM killer, say) takes only that: the pod is
  restarted, and the sweeper sees the heartbeat stop and queues the request again;
- after `FRESH_AFTER` jobs the worker starts itself afresh (`exec`, same process id), to shed
  whatever a long life gathered.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.worker import WorkerStatus

from workers import spans

log = logging.getLogger(__name__)

FRESH_AFTER = 1000  # jobs
PUBSUB_WAKE = 1.0  # seconds: how soon the command channel's reader notices it should stop


class StayingWorker(SimpleWorker):
    jobs_run = 0  # by this worker

    def subscribe(self) -> None:
        """RQ's command channel, read by a thread that wakes every second rather than every
        minute. Once unsubscribed, redis-py's reader sleeps its whole wait before it sees it
        should stop, and redis-py 8 makes `stop()` wait for it: a worker leaving (`--burst`,
        a shutdown) hung for up to a minute."""
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        reader: Any = self.pubsub.run_in_thread(
            sleep_time=PUBSUB_WAKE, daemon=True, exception_handler=self._pubsub_exception_handler
        )
        self.pubsub_thread = reader  # RQ declares it None-typed

    def execute_job(self, job: Job, queue: Queue) -> None:
        spans.mark("dequeued", job.id)
        self.jobs_run += 1
        execution = self.prepare_execution(job)
        stop = threading.Event()
        beats = threading.Thread(
            target=self._beat, args=(job, execution, stop), name="rq-heartbeat", daemon=True
        )
        beats.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            stop.set()
            beats.join()
        self.set_state(WorkerStatus.IDLE)

    def _beat(self, job: Job, execution: Execution, stop: threading.Event) -> None:
        while not stop.wait(self.job_monitoring_interval):
            with contextlib.suppress(RedisError):  # the next beat, or the sweeper, will tell
                self.maintain_heartbeats(job, execution)
