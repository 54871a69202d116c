"""RQ job functions. They take a request id, never user data: everything else is in Redis.

Every request has its own job, but the job does not push that request
alone: it waits for the push lane of the repository's branch, and the
lane's holder lands every request that is ready for the branch in one
batch. A job whose request another holder landed meanwhile just returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis import Redis

from config.errors import ApprovalsChanged, GitOpsError, ReleasegateError
from config.policy import Policy, load_policy
from config.principals import Principal
from config.settings import Settings
from workers import audit, mergerequests, metrics, outbox, rollout
from workers.connection import connect
from workers.deploy import BatchHooks, Outcome, apply_batch, context
from workers.gates import Locks, check_not_expired, check_open
from workers.gitenv import url_credentials
from workers.gitops import Checkout
from workers.identity import Identities, load_rocketchat_ids
from workers.lane import Lane, Lease, LeaseLost, lane_name
from workers.logs import request_context
from workers.plan import checkout_paths
from workers.queue import JOB_TIMEOUT, enqueue_forge
from workers.request import Approval, DeployRequest, RequestState, Result
from workers.signing import signer_and_check
from workers.store import RequestStore

log = logging.getLogger(__name__)

BATCH_SIZE = 50
LANE_WAIT = JOB_TIMEOUT - 120  # leave the holder's batch time to finish inside the job


def run_request(request_id: str) -> str:
    """See that an approved request lands (in this job's batch or another's); returns its
    final state."""
    settings = Settings()
    redis = connect(settings)
    store = RequestStore(redis, settings.retention)
    policy = load_policy(settings.policy)
    lane = Lane(redis, lane_name(policy.repository))

    def ended() -> bool:
        return store.state(request_id).final

    def waiting() -> bool:  # the forge refused to merge for now: the sweeper queues it again
        return store.not_before(request_id) > time.time()

    deadline = time.monotonic() + LANE_WAIT
    while not ended() and not waiting():
        with lane.held(give_up=ended, timeout=max(1.0, deadline - time.monotonic())) as lease:
            if lease is None:
                if ended():
                    break
                raise GitOpsError("timed out waiting for the push lane; the job is retried")
            try:
                drain(policy, settings, redis, lease)
            except LeaseLost as exc:
                log.warning("%s", exc)
    return store.state(request_id).value


def check_approvals(policy: Policy, identities: Identities, request: DeployRequest,
                    approvals: list[Approval]) -> None:  # fmt: skip
    """Raise unless the approvals still meet the policy loaded now: every counted approver
    still an approver of the environment, one count per person, and enough of them."""
    env = policy.environments.get(request.env)
    if env is None:
        raise ApprovalsChanged(f"{request.env} is no longer in the policy; nothing was pushed")
    counted, dropped = identities.still_counted(
        request.env, Principal.of(request.requester), approvals
    )
    if len(counted) < env.approvals:
        why = f" ({'; '.join(dropped)})" if dropped else ""
        raise ApprovalsChanged(
            f"the policy now asks for {env.approvals} approval(s) of deploys to {request.env} "
            f"and {len(counted)} still count{why}; nothing was pushed, ask again"
        )


def drain_lane() -> int:
    """Take over the push lane and land what is ready (queued by the sweeper when a lane's
    holder died); returns how many requests were still waiting when it started."""
    settings = Settings()
    redis = connect(settings)
    store = RequestStore(redis, settings.retention)
    policy = load_policy(settings.policy)
    lane = Lane(redis, lane_name(policy.repository))
    waiting = len(store.ready(BATCH_SIZE))
    while store.ready(1):
        with lane.held(give_up=lambda: not store.ready(1), timeout=LANE_WAIT) as lease:
            if lease is None:
                break
            try:
                drain(policy, settings, redis, lease)
            except LeaseLost as exc:
                log.warning("%s", exc)
    return waiting


def drain(policy: Policy, settings: Settings, redis: Redis, lease: Lease) -> None:
    """Land batches of ready requests until none is left (the lane's holder only)."""
    store = RequestStore(redis, settings.retention)
    locks = Locks(redis)
    signer, verify_head = signer_and_check(policy.repository, settings.git_signing_key,
                                           lambda: Path(checkout.path))  # fmt: skip
    checkout = Checkout(policy.repository, settings.workdir, ssh_key=settings.git_ssh_key,
                        paths=checkout_paths(policy), signer=signer)  # fmt: skip

    identities = Identities(policy, load_rocketchat_ids(redis))

    def gates(request: DeployRequest) -> None:
        now = _now()
        check_not_expired(request, now)
        check_open(policy, locks, request.env, now)
        check_approvals(policy, identities, request, store.approval_records(request.id))

    def before_push(requests: Sequence[DeployRequest]) -> None:
        lease.check()
        store.mark_pushing(request.id for request in requests)

    def approvers(request: DeployRequest) -> list[str]:
        """The approvals that count now (the trailers credit no one the policy dropped)."""
        records = store.approval_records(request.id)
        counted, _dropped = identities.still_counted(
            request.env, Principal.of(request.requester), records
        )
        return [approval.principal for approval in counted]

    hooks = BatchHooks(
        gates=gates,
        approvers=approvers,
        before_push=before_push,
        maybe_pushed=lambda request: store.was_pushing(request.id),
        on_retry=lambda: metrics.record_push_retry(redis),
        secrets=[*settings.secret_values(), *url_credentials(policy.repository.url)],
        verify_head=verify_head,
    )
    with checkout.locked():
        while True:
            lease.check()
            batch = []
            for request_id in store.ready(BATCH_SIZE):
                allowed = [RequestState.APPROVED, RequestState.RUNNING]
                if store.transition(request_id, allowed, RequestState.RUNNING) is not None:
                    batch.append(store.get(request_id))
            if not batch:
                return
            with request_context(**batch_context(batch)):
                log.info("landing a batch of %d request(s)", len(batch))
                if policy.repository.merge_request is not None:
                    outcomes = merge_batch(policy, settings, checkout, store, batch, hooks)
                else:
                    outcomes = apply_batch(policy, checkout, batch, hooks)
            if any(o.state is RequestState.PUSHED for o in outcomes.values()):
                lease.lane.record_push(checkout.head())
            for request in batch:
                if request.id in outcomes:
                    outcome = outcomes[request.id]
                    # Following starts before the request ends: a crash in between leaves
                    # it running, its re-run finds its commit and ends it, and the
                    # rollout record (written once) is already there.
                    if outcome.state is RequestState.PUSHED and outcome.commit:
                        rollout.start(redis, policy, request, outcome.commit)
                    end(store, request, outcome)


def merge_batch(policy: Policy, settings: Settings, checkout: Checkout, store: RequestStore,
                batch: list[DeployRequest], hooks: BatchHooks) -> dict[str, Outcome]:  # fmt: skip
    """Merge each request's pull request through the forge; one the forge refused for now
    goes back to approved, to be tried again after its wait (the sweeper queues it)."""
    outcomes: dict[str, Outcome] = {}
    try:
        forge = mergerequests.forge_of(policy, settings)
        if forge is None:
            raise ReleasegateError("the policy no longer lands through merge requests")
    except ReleasegateError as exc:
        return {request.id: Outcome(RequestState.FAILED, str(exc)) for request in batch}
    for request in batch:
        with request_context(**context(request)):
            outcome = mergerequests.land(policy, checkout, forge, store, request, hooks)
        if outcome is None:
            store.transition(request.id, [RequestState.RUNNING], RequestState.APPROVED)
        else:
            outcomes[request.id] = outcome
    return outcomes


def batch_context(batch: list[DeployRequest]) -> dict[str, str | None]:
    """Log fields for lines about a whole batch: every request id, app and environment."""

    def joined(values: list[str]) -> str:
        return ",".join(dict.fromkeys(values))

    return {
        "request_id": joined([r.id for r in batch]),
        "app": joined([c.app for r in batch for c in r.changes]),
        "env": joined([r.env for r in batch]),
        "actor": joined([r.requester for r in batch]),
    }


def end(store: RequestStore, request: DeployRequest, outcome: Outcome) -> None:
    """Record how a running request ended, count it, and queue the news for its channel."""
    redis = store.redis
    result = Result(state=outcome.state, message=outcome.message, commit=outcome.commit,
                    finished_at=_now())  # fmt: skip
    with request_context(**context(request)):
        if not store.finish(request.id, [RequestState.RUNNING], result, outbox.report_to(request)):
            return
        if result.state is RequestState.FAILED:
            log.warning("deploy failed: %s", result.message)
        pushed = result.state is RequestState.PUSHED
        seconds = (result.finished_at - request.created_at).total_seconds() if pushed else None
        metrics.record_deploy(redis, request.env, result.state.value, seconds)
        audit.record(redis, "outcome", request=request.id, state=result.state.value,
                     commit=result.commit, message=result.message)  # fmt: skip
        if pushed:
            supersede(store, request)


def supersede(store: RequestStore, landed: DeployRequest) -> list[str]:
    """Close the pending requests that `landed` made stale (they would move a pin from a
    version it no longer holds); each card and thread says so. Returns their ids."""
    now_at = {(c.app, c.env): c.new for c in landed.changes}
    closed = []
    for other, state in store.open_requests():
        if state is not RequestState.PENDING:
            continue
        request_id = other.id
        stale = [c for c in other.changes if now_at.get((c.app, c.env), c.old) != c.old]
        if not stale:
            continue
        change = stale[0]
        message = (
            f"{landed.id} landed first, so {change.app} in {change.env} is now "
            f"{now_at[(change.app, change.env)]}, not {change.old}; ask again if still wanted"
        )
        result = Result(state=RequestState.SUPERSEDED, message=message, finished_at=_now())
        if store.finish(request_id, [RequestState.PENDING], result, outbox.report_to(other)):
            with request_context(**context(other)):
                log.info("%s", message)
            if store.merge_request(request_id) is not None:
                enqueue_forge(store.redis, "close_change", request_id)
            audit.record(store.redis, "superseded", request=request_id, by=landed.id)
            closed.append(request_id)
    return closed


def on_job_failure(job: Any, connection: Any, exc_type: Any, exc: Any, tb: Any) -> None:
    """RQ calls this when the job crashed; once retries are used up, end the request as failed."""
    if job.retries_left:
        return
    settings = Settings()
    redis = connect(settings)
    store = RequestStore(redis, settings.retention)
    request = store.get(job.id)
    with request_context(**context(request)):
        log.error("deploy job crashed: %s", exc)
        result = Result(
            state=RequestState.FAILED,
            message=f"the worker crashed ({exc_type.__name__}); see the worker's log",
            finished_at=_now(),
        )
        running = [RequestState.APPROVED, RequestState.RUNNING]
        if store.finish(job.id, running, result, outbox.report_to(request)):
            metrics.record_deploy(redis, request.env, "failed", None)
            audit.record(redis, "outcome", request=job.id, state="failed", message=result.message)


def _now() -> datetime:
    return datetime.now(UTC)
