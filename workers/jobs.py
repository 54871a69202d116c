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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis import Redis

from config.errors import GitOpsError, ReleasegateError
from config.policy import Policy, load_policy
from config.settings import Settings
from workers import spans
from workers.artifacts.resolve import Resolver, check_artifacts
from workers.git.checkout import Checkout
from workers.git.env import url_credentials
from workers.git.signing import HeadCheck, signer_and_check
from workers.landing import mergerequests
from workers.landing.batch import BatchHooks, Checkouts, apply_batch, context
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
from workers.rules.plan import checkout_paths, landing
from workers.rules.verdicts import check_not_failed
from workers.state import audit, metrics, outbox
from workers.state.connection import connect
from workers.state.lane import Lane, Lease, LeaseLost, held_together, lane_name
from workers.state.queue import JOB_TIMEOUT, enqueue_forge
from workers.state.request import DeployRequest, RequestState, Result
from workers.state.store import RequestStore
from workers.state.verdicts import Verdicts

log = logging.getLogger(__name__)

BATCH_SIZE = 50
LANE_WAIT = JOB_TIMEOUT - 120  # leave the holder's batch time to finish inside the job


@dataclass(frozen=True)
class Services:
    """What every job starts from: its settings, Redis, the request store and the policy."""

    settings: Settings
    redis: Redis
    store: RequestStore
    policy: Policy

    @classmethod
    def load(cls) -> Services:
        settings = Settings()
        redis = connect(settings)
        store = RequestStore(redis, settings.retention, durable=True)
        return cls(settings, redis, store, load_policy(settings.policy))

    def checkout(self, name: str) -> tuple[Checkout, HeadCheck]:
        """The worker's checkout of repository `name` (signing when a key is set), and the
        check of the head it builds on."""
        policy, settings = self.policy, self.settings
        repository = policy.repositories[name]
        signer, verify_head = signer_and_check(
            repository, settings.git_signing_key, lambda: Path(checkout.path)
        )
        checkout = Checkout(
            repository,
            settings.workdir,
            access=repository.access(settings.git_access()),
            paths=checkout_paths(policy, name),
            signer=signer,
        )
        return checkout, verify_head

    def lanes(self, names: Sequence[str]) -> list[Lane]:
        """The push lanes of repositories `names`, in the policy's order."""
        ordered = [name for name in self.policy.repositories if name in names]
        return [Lane(self.redis, lane_name(self.policy.repositories[n])) for n in ordered]


def run_request(request_id: str) -> str:
    """See that an approved request lands (in this job's batch or another's); returns its
    final state."""
    spans.mark("job", request_id)
    job = Services.load()
    store = job.store
    request = store.get(request_id)  # read once: it never changes
    deployments.note(job.redis, job.policy, request)  # approved: `queued`
    lanes = job.lanes(landing(job.policy, request)[0])

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
                drain(job, leases)
            except LeaseLost as exc:
                log.warning("%s", exc)
        if not ended():
            time.sleep(0.1)  # not in this batch's window: the lanes go to others meanwhile
    return store.state(request_id).value


def record_deployments(request_id: str) -> str:
    """Bring the request's deployment records on its apps' source repositories (GitHub,
    GitLab) to its state; raises for RQ to retry when the forge refused."""
    job = Services.load()
    request = job.store.get(request_id)
    result = job.store.result(request_id)
    log_url = ""
    if result is not None and result.commits:
        name = job.policy.app_repository(request.changes[0].app)
        sha = result.commits.get(name) or next(iter(result.commits.values()))
        repository = job.policy.repositories.get(name)
        log_url = (repository.commit_url(sha) if repository else None) or ""
    with request_context(request_id=request_id):
        posted = deployments.sync(job.redis, job.policy, request, log_url)
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
    job = Services.load()
    store = job.store
    lanes = job.lanes(list(job.policy.repositories))
    waiting = len(store.ready(BATCH_SIZE))
    while store.ready(1):
        with held_together(lanes, give_up=lambda: not store.ready(1), timeout=LANE_WAIT) as leases:
            if leases is None:
                break
            try:
                drain(job, leases)
            except LeaseLost as exc:
                log.warning("%s", exc)
    return waiting


def open_change(request_id: str) -> str:
    """Queued when a request is made in merge-request mode: open its pull request while people
    approve."""
    job = Services.load()
    request = job.store.get(request_id)
    if job.store.state(request_id).final:
        return "ended"
    try:
        name = mergerequests.repository_of(job.policy, request)
        forge = mergerequests.forge_of(job.policy, job.settings, name)
        if forge is None:
            return "no forge"
        checkout, verify_head = job.checkout(name)
        mergerequests.open_for(job.policy, name, checkout, forge, job.store, request, verify_head)
    except MergeRefused as exc:
        if "being opened" in str(exc):  # the merge on approval got there first
            return "opened elsewhere"
        mergerequests.note_not_opened(job.redis, request, exc)
        return "failed"
    except ReleasegateError as exc:
        mergerequests.note_not_opened(job.redis, request, exc)
        return "failed"
    return "opened"


def close_change(request_id: str) -> str:
    """Queued when a request with a pull request is cancelled, rejected or expired."""
    job = Services.load()
    request = job.store.get(request_id)
    try:
        name = mergerequests.repository_of(job.policy, request)
        forge = mergerequests.forge_of(job.policy, job.settings, name)
    except ReleasegateError as exc:
        log.warning("cannot close the pull request of %s: %s", request_id, exc)
        return "not closed"
    if forge is not None:
        mergerequests.close(job.policy, forge, job.store, request)
    return "closed"


def drain(job: Services, leases: Sequence[Lease]) -> None:
    """Land batches of ready requests until none is left that the held lanes cover (the
    lanes' holder only)."""
    policy, settings, redis, store = job.policy, job.settings, job.redis, job.store
    locks = Locks(redis)
    held = {
        name: lease
        for name in policy.repositories
        for lease in leases
        if lease.lane.name == lane_name(policy.repositories[name])
    }
    prepared = {name: job.checkout(name) for name in held}
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
                outcomes = _land_batch(job, checkouts, batch, hooks)
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
    job: Services, checkouts: Checkouts, batch: list[DeployRequest], hooks: BatchHooks
) -> dict[str, Result]:
    """Requests that land through the forge are merged there (and pushed around the merge in
    their other repositories); the rest are pushed together."""
    policy = job.policy
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
            mixed = land_mixed(policy, job.settings, checkouts, job.store, request, hooks)
            if mixed is not None:
                outcomes[request.id] = mixed
            continue
        outcomes.update(
            mergerequests.merge_batch(
                policy, job.settings, name, checkouts[name], job.store, [request], hooks
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


def end(store: RequestStore, request: DeployRequest, outcome: Result) -> None:
    """Record how a running request ended, count it, and queue the news for its channel."""
    redis = store.redis
    result = outcome.model_copy(update={"finished_at": _now()})
    with request_context(**context(request)):
        if not store.finish(request.id, [RequestState.RUNNING], result, outbox.report_to(request)):
            return
        if result.state is RequestState.FAILED:
            log.warning("deploy failed: %s", result.message or result.reason)
        landed = result.state.landed
        seconds = (result.finished_at - request.created_at).total_seconds() if landed else None
        metrics.record_deploy(redis, request.env, result.state.value, seconds)
        audit.record(
            redis,
            "outcome",
            request=request.id,
            state=result.state.value,
            commit=result.commit,
            message=result.message or None,
            reason=result.reason or None,
        )
        if landed:
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
        facts = {
            "by": landed.id,
            "app": change.app,
            "env": change.env,
            "now": now_at[(change.app, change.env)],
            "was": change.old,
        }
        result = Result(state=RequestState.SUPERSEDED, reason="superseded", facts=facts)
        if store.finish(request_id, [RequestState.PENDING], result, outbox.report_to(other)):
            with request_context(**context(other)):
                log.info("superseded by %s", landed.id)
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
            state=RequestState.FAILED, reason="crashed", facts={"error": exc_type.__name__}
        )
        running = [RequestState.APPROVED, RequestState.RUNNING]
        if store.finish(job.id, running, result, outbox.report_to(request)):
            metrics.record_deploy(redis, request.env, "failed", None)
            audit.record(redis, "outcome", request=job.id, state="failed", reason="crashed")


def _now() -> datetime:
    return datetime.now(UTC)
