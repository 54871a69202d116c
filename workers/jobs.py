"""RQ job functions: the only module that queued jobs name. They take a request id, never
user data: everything else is in Redis.

Every request has its own job, but the job does not push that request
alone: it waits for the push lanes of the branches it changes (one per
repository, taken in the policy's order), and their holder lands every
request that is ready for those branches in one batch. A job whose request
another holder landed meanwhile just returns.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

from config.errors import GitOpsError, ReleasegateError
from config.policy import Policy
from config.settings import Settings
from workers import spans
from workers.artifacts.resolve import Resolver, check_artifacts
from workers.git.env import url_credentials
from workers.landing import mergerequests
from workers.landing.batch import BatchHooks, Checkouts, apply_batch, context
from workers.landing.ended import end
from workers.landing.forges import MergeRefused
from workers.landing.landed import after_landing
from workers.landing.mixed import land_mixed
from workers.landing.sandbox import Limits, Sandbox
from workers.logs import request_context
from workers.records import deployments
from workers.rules.alerts import check_alerts
from workers.rules.approvals import check_approvals, counted_approvers
from workers.rules.checks import check_ci
from workers.rules.gates import Locks, check_not_expired, check_open
from workers.rules.identity import Identities, load_rocketchat_ids, slack_groups_now
from workers.rules.plan import landing
from workers.rules.verdicts import check_not_failed
from workers.services import Services
from workers.state import audit, metrics, outbox
from workers.state.connection import connect
from workers.state.lane import Lease, LeaseLost, held_together, lane_name
from workers.state.queue import JOB_TIMEOUT
from workers.state.request import DeployRequest, RequestState, Result
from workers.state.store import RequestStore
from workers.state.verdicts import Verdicts

log = logging.getLogger(__name__)

BATCH_SIZE = 50
LANE_WAIT = JOB_TIMEOUT - 120  # leave the holder's batch time to finish inside the job


def run_request(request_id: str) -> str:
    """See that an approved request lands (in this job's batch or another's); returns its
    final state."""
    spans.mark("job", request_id)
    services = Services.load()
    store = services.store
    request = store.get(request_id)  # read once: it never changes
    deployments.note(services.redis, services.policy, request)  # approved: `queued`
    lanes = services.lanes(landing(services.policy, request)[0])

    def ended() -> bool:
        return store.state(request_id).final

    def waiting() -> bool:  # the forge refused to merge for now: the sweeper queues it again
        return store.not_before(request_id) > time.time()

    deadline = time.monotonic() + LANE_WAIT
    while not ended() and not waiting():
        left = max(1.0, deadline - time.monotonic())
        with held_together(lanes, give_up=ended, timeout=left) as leases:
            if leases is None:
                if ended():
                    break
                raise GitOpsError("timed out waiting for the push lane; the job is retried")
            spans.mark("lane", request_id)
            try:
                drain(services, leases)
            except LeaseLost as exc:
                log.warning("%s", exc)
        if not ended():
            time.sleep(0.1)  # not in this batch's window: the lanes go to others meanwhile
    return store.state(request_id).value


def record_deployments(request_id: str) -> str:
    """Bring the request's deployment records on its apps' source repositories (GitHub,
    GitLab) to its state; raises for RQ to retry when the forge refused."""
    services = Services.load()
    request = services.store.get(request_id)
    result = services.store.result(request_id)
    log_url = ""
    if result is not None and result.commits:
        name = services.policy.app_repository(request.changes[0].app)
        sha = result.commits.get(name) or next(iter(result.commits.values()))
        repository = services.policy.repositories.get(name)
        log_url = (repository.commit_url(sha) if repository else None) or ""
    with request_context(request_id=request_id):
        posted = deployments.sync(services.redis, services.policy, request, log_url)
        if posted:
            log.info("deployment records: %s", ", ".join(posted))
    return ", ".join(posted) or "nothing new"


def on_records_failure(job: Any, connection: Any, exc_type: Any, exc: Any, tb: Any) -> None:
    """Said once, when RQ gives up: the deploy itself is not affected."""
    if not job.retries_left:
        log.warning("gave up recording the deployments of %s on the forge: %s", job.args[0], exc)


def drain_lane() -> int:
    """Take over every push lane and land what is ready (queued by the sweeper when a lane's
    holder died); returns how many requests were still waiting when it started."""
    services = Services.load()
    store = services.store
    lanes = services.lanes(list(services.policy.repositories))
    waiting = len(store.ready(BATCH_SIZE))
    while store.ready(1):
        with held_together(lanes, give_up=lambda: not store.ready(1), timeout=LANE_WAIT) as leases:
            if leases is None:
                break
            try:
                drain(services, leases)
            except LeaseLost as exc:
                log.warning("%s", exc)
    return waiting


def open_change(request_id: str) -> str:
    """Queued when a request is made in merge-request mode: open its merge request while people
    approve."""
    services = Services.load()
    request = services.store.get(request_id)
    if services.store.state(request_id).final:
        return "ended"
    noun = "merge request"
    try:
        name = mergerequests.repository_of(services.policy, request)
        noun = mergerequests.noun_of(services.policy, name)
        forge = mergerequests.forge_of(services.policy, services.settings, name)
        if forge is None:
            return "no forge"
        checkout, verify_head = services.checkout(name)
        mergerequests.open_for(
            services.policy, name, checkout, forge, services.store, request, verify_head
        )
    except MergeRefused as exc:
        if "being opened" in str(exc):  # the merge on approval got there first
            return "opened elsewhere"
        mergerequests.note_not_opened(services.redis, request, exc, noun)
        return "failed"
    except ReleasegateError as exc:
        mergerequests.note_not_opened(services.redis, request, exc, noun)
        return "failed"
    return "opened"


def close_change(request_id: str) -> str:
    """Queued when a request with a merge request is cancelled, rejected or expired."""
    services = Services.load()
    request = services.store.get(request_id)
    try:
        name = mergerequests.repository_of(services.policy, request)
        forge = mergerequests.forge_of(services.policy, services.settings, name)
    except ReleasegateError as exc:
        log.warning("cannot close the merge request of %s: %s", request_id, exc)
        return "not closed"
    if forge is not None:
        mergerequests.close(services.policy, forge, services.store, request)
    return "closed"


def drain(services: Services, leases: Sequence[Lease]) -> None:
    """Land batches of ready requests until none is left that the held lanes cover (the
    lanes' holder only)."""
    policy, settings = services.policy, services.settings
    redis, store = services.redis, services.store
    locks = Locks(redis)
    held = {
        name: lease
        for name in policy.repositories
        for lease in leases
        if lease.lane.name == lane_name(policy.repositories[name])
    }
    prepared = {name: services.checkout(name) for name in held}
    checkouts: Checkouts = {name: checkout for name, (checkout, _check) in prepared.items()}
    identities = Identities(policy, load_rocketchat_ids(redis))

    resolver = Resolver.from_settings(settings)

    def recheck(request: DeployRequest) -> None:
        if request.rollback_of:  # releasegate's own rollback: what ran before passed them
            return
        if request.break_glass:  # past the gates; the artifact, its digest and signature hold
            check_artifacts(policy, resolver, request)
            return
        now = _now()
        check_not_expired(request, now)
        check_open(policy, locks, request.env, now, holder=request.requester)
        groups = slack_groups_now(redis, now.timestamp())
        check_approvals(policy, identities, request, store.approval_records(request.id), groups)
        check_artifacts(policy, resolver, request)
        check_not_failed(policy, Verdicts(redis), request)
        # An alert that began firing after the approval stops the commit (not a rollback's).
        apps = [c.app for c in request.changes]
        check_alerts(policy, request.env, apps, request.verb)
        if request.verb != "rollback":
            check_ci(policy, request.env, request.artifacts, apps)

    def approvers(request: DeployRequest) -> list[str]:
        groups = slack_groups_now(redis, time.time())
        return counted_approvers(identities, request, store.approval_records(request.id), groups)

    def before_push(requests: Sequence[DeployRequest]) -> None:
        for lease in leases:
            lease.check()
        store.mark_pushing(request.id for request in requests)

    hooks = BatchHooks(
        recheck=recheck,
        approvers=approvers,
        before_push=before_push,
        maybe_pushed=lambda request: store.was_pushing(request.id),
        on_retry=lambda: metrics.record_push_retry(redis),
        secrets=_secrets(policy, settings),
        sandbox=Sandbox(
            settings.validate_sandbox,
            settings.validate_readonly_paths,
            limits=Limits.of(settings),
        ),
        verify_head=lambda name, head: prepared[name][1](head),
    )
    with ExitStack() as slots:
        for checkout in checkouts.values():
            slots.enter_context(checkout.in_slot())
        while True:
            for lease in leases:
                lease.check()
            batch = _take_batch(policy, store, set(held))
            if not batch:
                return
            with request_context(**batch_context(batch)):
                log.info("landing a batch of %d request(s)", len(batch))
                outcomes = _land_batch(services, checkouts, batch, hooks)
            for name, lease in held.items():
                if any(name in o.commits for o in outcomes.values() if o.state.landed):
                    lease.lane.record_push(checkouts[name].head())
            for request in batch:
                if request.id in outcomes:
                    outcome = outcomes[request.id]
                    # Following starts before the request ends: a crash in between leaves
                    # it running, its re-run finds its commit and ends it, and the
                    # rollout record (written once) is already there.
                    if outcome.state.landed and outcome.commits:
                        after_landing(store, policy, request, outcome.commits)
                    end(store, request, outcome)
                    deployments.note(redis, policy, request)
                    spans.mark("ended", request.id)


def _take_batch(policy: Policy, store: RequestStore, held: set[str]) -> list[DeployRequest]:
    """The ready requests whose every repository's lane is held, now running."""
    batch: list[DeployRequest] = []
    # A wider look than one batch: the first ready requests may all need lanes not held here.
    for request_id in store.ready(BATCH_SIZE * 4):
        if len(batch) >= BATCH_SIZE:
            break
        request = store.get(request_id)
        if not set(landing(policy, request)[0]) <= held:
            continue  # its own job takes every lane it needs
        allowed = [RequestState.APPROVED, RequestState.RUNNING]
        if store.transition(request_id, allowed, RequestState.RUNNING) is not None:
            batch.append(request)
    return batch


def _land_batch(
    services: Services, checkouts: Checkouts, batch: list[DeployRequest], hooks: BatchHooks
) -> dict[str, Result]:
    """Requests that land through the forge are merged there (and pushed around the merge in
    their other repositories); the rest are pushed together."""
    policy = services.policy
    landings: dict[str, tuple[tuple[str, ...], str]] = {}
    outcomes: dict[str, Result] = {}
    for request in batch:
        try:
            landings[request.id] = landing(policy, request)
        except ReleasegateError as exc:
            outcomes[request.id] = Result(state=RequestState.FAILED, message=str(exc))
    by_forge = [r for r in batch if r.id in landings and landings[r.id][1]]
    pushed = [r for r in batch if r.id in landings and not landings[r.id][1]]
    outcomes.update(apply_batch(policy, checkouts, pushed, hooks) if pushed else {})
    for request in by_forge:
        names, name = landings[request.id]
        if len(names) > 1:  # pushed around the merge
            mixed = land_mixed(policy, services.settings, checkouts, services.store, request, hooks)
            if mixed is not None:
                outcomes[request.id] = mixed
            continue
        outcomes.update(
            mergerequests.merge_batch(
                policy, services.settings, name, checkouts[name], services.store, [request], hooks
            )
        )
    return outcomes


def _secrets(policy: Policy, settings: Settings) -> list[str]:
    """What no validator's output may show: this process's secrets, the repositories' URL
    credentials and every forge token the policy names."""
    found = [*settings.secret_values()]
    for repository in policy.repositories.values():
        found += url_credentials(repository.url)
        if repository.merge_request and (
            token := os.environ.get(repository.merge_request.token_env)
        ):
            found.append(token)
    return found


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
            state=RequestState.FAILED, reason="crashed", facts={"error": exc_type.__name__}
        )
        running = [RequestState.APPROVED, RequestState.RUNNING]
        if store.finish(job.id, running, result, outbox.report_to(request)):
            metrics.record_deploy(redis, request.env, "failed", None)
            audit.record(redis, "outcome", request=job.id, state="failed", reason="crashed")


def _now() -> datetime:
    return datetime.now(UTC)
