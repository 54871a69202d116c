"""Apply a batch of approved requests to one branch: one commit each, one push for all.

The push lane's holder calls `apply_batch` with every request ready for the
branch. From a fresh fetch it skips requests whose trailer is already on the
branch (a retry after a crash), then for each of the others re-checks its
lock, window, expiry and approvals, that every pin still holds the approved
old version and that the diff is still the one people approved, writes, validates and commits. A
request that fails any of this is dropped from the batch (the working tree
goes back to the last good commit) and ends alone; the rest are pushed
together. A push that loses a race to an outside writer fetches and
re-applies the batch; a push the remote refuses fails the batch; a push that
errored is checked against the remote before it is called failed.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from config.errors import PushRejected, ReleasegateError, RemoteUnreachable, StaleRequest
from config.policy import Policy
from workers.git.checkout import Checkout
from workers.landing.commit import commit_message
from workers.landing.provenance import not_ours
from workers.landing.validation import Sandbox, validate
from workers.logs import request_context
from workers.rules.plan import current_version, plan_changes, same_change
from workers.state.request import DeployRequest, RequestState, Result

log = logging.getLogger(__name__)

# Outside pushers only (workers never race each other): a busy one, on a busy host.
MAX_RACE_ATTEMPTS = 20
RACE_JITTER = 0.05  # seconds, times the attempt number


@dataclass
class BatchHooks:
    """What the batch needs from the job around it."""

    # Raises to stop one request: a lock, a closed window, expiry, approvals that no longer count.
    recheck: Callable[[DeployRequest], None]
    approvers: Callable[[DeployRequest], Sequence[str]]  # for the Approved-by trailers
    # Runs right before each push with the requests in it; raises when the lane's lease is lost.
    before_push: Callable[[Sequence[DeployRequest]], None] = lambda requests: None
    # Whether a push of this request may ever have been tried: only then can its commit
    # already be on the branch, and only then is the branch's history searched for it.
    maybe_pushed: Callable[[DeployRequest], bool] = lambda request: True
    on_retry: Callable[[], None] = lambda: None
    secrets: Sequence[str] = ()
    sandbox: Sandbox = field(default_factory=Sandbox)  # where the repository's validator runs
    # Raises when the fetched head may not be built on (its signature is not trusted).
    verify_head: Callable[[str], None] = lambda head: None


def context(request: DeployRequest) -> dict[str, str | None]:
    apps = ",".join(c.app for c in request.changes)
    return {"request_id": request.id, "app": apps, "env": request.env, "actor": request.requester}


def _check_not_moved(policy: Policy, checkout: Checkout, request: DeployRequest) -> None:
    for change in request.changes:
        now = current_version(policy, checkout.read, change.app, change.env)
        if now not in (change.old, change.new):
            raise StaleRequest(
                "moved", app=change.app, env=change.env, now=now, old=change.old, new=change.new
            )


def apply_one(
    policy: Policy, checkout: Checkout, request: DeployRequest, hooks: BatchHooks
) -> str | None:
    """Commit `request` on top of the working tree; None when the pins already hold it."""
    _check_not_moved(policy, checkout, request)
    plan = plan_changes(policy, checkout.read, request.changes)
    if not plan.changed_files:
        return None
    if not same_change(request.diff, plan.diff()):
        raise StaleRequest("diff_changed")
    for file in plan.changed_files:
        checkout.write(file, plan.after[file])
    env = policy.environments[request.env]
    if env.validate_command:
        validate(
            env.validate_command,
            Path(checkout.path),
            allowed_env=env.validate_env,
            secrets=hooks.secrets,
            sandbox=hooks.sandbox.with_network(env.validate_network),
        )
    hooks.recheck(request)
    return checkout.commit(commit_message(request, hooks.approvers(request)), plan.changed_files)


def apply_batch(
    policy: Policy,
    checkout: Checkout,
    requests: Sequence[DeployRequest],
    hooks: BatchHooks,
    max_attempts: int = MAX_RACE_ATTEMPTS,
) -> dict[str, Result]:
    """Land what can land of `requests`; returns how each one ended, by request id."""
    outcomes: dict[str, Result] = {}
    todo = list(requests)
    for attempt in range(1, max_attempts + 1):
        started = time.monotonic()
        try:
            head = checkout.sync()
        except RemoteUnreachable as exc:
            return _fail(outcomes, [(r, "") for r in todo], str(exc))
        try:
            hooks.verify_head(head)
        except ReleasegateError as exc:
            return _fail(outcomes, [(r, "") for r in todo], str(exc))
        search = any(hooks.maybe_pushed(request) for request in todo)
        landed = checkout.request_commits() if search else {}
        log.debug("fetched %s; applying %d request(s)", head[:7], len(todo))
        committed: list[tuple[DeployRequest, str]] = []
        for request in todo:
            with request_context(**context(request)):
                sha = landed.get(request.id)
                why = not_ours(policy, checkout, request, sha) if sha else "not landed"
                if sha and why:
                    log.warning("%s carries the request's trailer, but %s", sha[:7], why)
                elif sha:
                    log.info("already committed as %s", sha[:7])
                    outcomes[request.id] = Result(
                        state=RequestState.PUSHED, message="pushed", commit=sha
                    )
                    continue
                good = checkout.head()
                try:
                    sha = apply_one(policy, checkout, request, hooks)
                except ReleasegateError as exc:
                    log.warning("dropped from the batch: %s", exc)
                    checkout.reset_to(good)
                    outcomes[request.id] = failed(exc)
                    continue
                if sha is None:
                    outcomes[request.id] = already_there(request)
                else:
                    committed.append((request, sha))
        if not committed:
            return outcomes
        applied = time.monotonic()
        # A lost lease raises here: the lane's next holder finishes the batch.
        hooks.before_push([request for request, _sha in committed])
        try:
            checkout.push()
        except PushRejected as exc:
            if checkout.fetch() == head:  # nobody else pushed: the remote said no
                return _fail(outcomes, committed, f"the remote refused the push: {exc}")
            log.info("attempt %d/%d: %s; fetching and re-applying", attempt, max_attempts, exc)
            hooks.on_retry()
            # A little random wait from the second loss on: an outside writer that pushes on a
            # steady beat would otherwise win every race that starts at the same point of it.
            if attempt > 1:
                time.sleep(random.uniform(0, RACE_JITTER * attempt))  # noqa: S311 - not a secret
            todo = [request for request, _sha in committed]
            continue
        except RemoteUnreachable as exc:
            if not _landed_anyway(checkout):
                return _fail(outcomes, committed, str(exc))
            log.warning("the push reported %s, but the remote has our commits", exc)
        log.info(
            "pushed %d commit(s) after %d attempt(s): fetch and apply %.0f ms, push %.0f ms",
            len(committed),
            attempt,
            (applied - started) * 1000,
            (time.monotonic() - applied) * 1000,
        )
        for request, sha in committed:
            outcomes[request.id] = Result(state=RequestState.PUSHED, message="pushed", commit=sha)
        return outcomes
    for request in todo:
        outcomes[request.id] = Result(
            state=RequestState.FAILED, reason="kept_moving", facts={"attempts": str(max_attempts)}
        )
    return outcomes


def failed(exc: ReleasegateError) -> Result:
    """How a request that raised `exc` ends: with the reason as data where there is one."""
    if isinstance(exc, StaleRequest):
        return Result(state=RequestState.FAILED, reason=exc.reason, facts=exc.facts)
    return Result(state=RequestState.FAILED, message=str(exc))


def already_there(request: DeployRequest) -> Result:
    """The outcome of a request whose pins already hold what it asks for."""
    return Result(state=RequestState.NOOP, reason="already_there")


def _landed_anyway(checkout: Checkout) -> bool:
    try:
        return checkout.landed(checkout.head())
    except ReleasegateError:
        return False


def _fail(
    outcomes: dict[str, Result], committed: Sequence[tuple[DeployRequest, str]], message: str
) -> dict[str, Result]:
    for request, _sha in committed:
        outcomes[request.id] = Result(state=RequestState.FAILED, message=message)
    return outcomes
