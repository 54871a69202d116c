"""RQ job functions. They take a request id, never user data: everything else is in Redis."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from config.errors import ReleasegateError
from config.policy import load_policy
from config.settings import Settings
from workers import audit, metrics
from workers.connection import connect
from workers.deploy import apply_request
from workers.gates import Locks, check_not_expired, check_open
from workers.gitops import Checkout
from workers.logs import request_context
from workers.reporting import outcome_text, report, retry_unreported
from workers.request import DeployRequest, RequestState, Result
from workers.store import RequestStore
from workers.sweeper import sweep

log = logging.getLogger(__name__)


def _context(request: DeployRequest) -> dict[str, str | None]:
    apps = ",".join(c.app for c in request.changes)
    return {"request_id": request.id, "app": apps, "env": request.env, "actor": request.requester}


def run_request(request_id: str) -> str:
    """Apply an approved request and report how it ended; returns the final state."""
    settings = Settings()
    redis = connect(settings)
    store = RequestStore(redis)
    retry_unreported(redis, settings)
    sweep(redis)
    request = store.get(request_id)
    with request_context(**_context(request)):
        # RUNNING is allowed too: a retry after a worker died mid-job picks up
        # where it left off, and the commit trailer keeps it from committing twice.
        if store.transition(request_id, [RequestState.APPROVED, RequestState.RUNNING],
                            RequestState.RUNNING) is None:  # fmt: skip
            state = store.state(request_id)
            log.info("request is %s, not approved; nothing to do", state.value)
            return state.value
        try:
            policy = load_policy(settings.policy)
            locks = Locks(redis)

            def check_gates() -> None:
                now = _now()
                check_not_expired(request, now)
                check_open(policy, locks, request.env, now)

            check_gates()
            checkout = Checkout(policy.repository, settings.workdir, ssh_key=settings.git_ssh_key)
            with checkout.locked():
                approvers = store.approvals(request_id)
                applied = apply_request(
                    policy, checkout, request, approvers, gates=check_gates,
                    on_retry=lambda: metrics.record_push_retry(redis),
                )  # fmt: skip
        except ReleasegateError as exc:
            log.warning("deploy failed: %s", exc)
            result = Result(state=RequestState.FAILED, message=str(exc), finished_at=_now())
        else:
            if applied.commit is None:
                message = "; ".join(
                    f"{c.app} already runs {c.new} in {c.env}" for c in request.changes
                )
                result = Result(state=RequestState.NOOP, message=message, finished_at=_now())
            else:
                result = Result(
                    state=RequestState.PUSHED,
                    message="pushed",
                    commit=applied.commit,
                    finished_at=_now(),
                )
        if store.finish(request_id, [RequestState.RUNNING], result):
            pushed = result.state is RequestState.PUSHED
            seconds = (result.finished_at - request.created_at).total_seconds() if pushed else None
            metrics.record_deploy(redis, request.env, result.state.value, seconds)
            audit.record(redis, "outcome", request=request_id, state=result.state.value,
                         commit=result.commit, message=result.message)  # fmt: skip
            report(redis, settings, request, outcome_text(request, result))
        return result.state.value


def on_job_failure(job: Any, connection: Any, exc_type: Any, exc: Any, tb: Any) -> None:
    """RQ calls this when the job crashed; once retries are used up, end the request as failed."""
    if job.retries_left:
        return
    settings = Settings()
    redis = connect(settings)
    store = RequestStore(redis)
    request = store.get(job.id)
    with request_context(**_context(request)):
        log.error("deploy job crashed: %s", exc)
        result = Result(
            state=RequestState.FAILED,
            message=f"the worker crashed ({exc_type.__name__}); see the worker's log",
            finished_at=_now(),
        )
        if store.finish(job.id, [RequestState.APPROVED, RequestState.RUNNING], result):
            metrics.record_deploy(redis, request.env, "failed", None)
            audit.record(redis, "outcome", request=job.id, state="failed", message=result.message)
            report(redis, settings, request, outcome_text(request, result))


def _now() -> datetime:
    return datetime.now(UTC)
