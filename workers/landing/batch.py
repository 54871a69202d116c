"""Apply a batch of approved requests to their branches: one commit each per repository
it changes, one push per repository for all.

The holder of the push lanes calls `apply_batch` with every request ready for
them. From a fresh fetch of each repository it skips what a request's trailer
shows already landed there (a retry after a crash), then for the rest
re-checks its lock, window, expiry and approvals, that every pin still holds
the approved old version and that the diff is still the one people approved,
writes, validates and commits. A request that fails any of this is dropped
from the batch (each working tree goes back to its last good commit) and ends
alone. Only when every repository's part of every request is prepared does
anything land: repository by repository, in the policy's order, one push each.
A push that loses a race to an outside writer fetches and prepares again what
has not landed; a push the remote refuses fails the requests in it, saying
exactly what of each landed where; a push that errored is checked against the
remote before it is called failed. Nothing that landed is ever reverted.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from config.errors import (
    PinError,
    PushRejected,
    ReleasegateError,
    RemoteUnreachable,
    StaleRequest,
)
from config.policy import Policy
from workers import pins, spans
from workers.git.checkout import Checkout
from workers.git.integrity import TamperedCommit
from workers.landing.commit import commit_message
from workers.landing.provenance import not_ours
from workers.landing.sandbox import Sandbox
from workers.landing.validation import validate
from workers.logs import request_context
from workers.rules.plan import (
    MIXED,
    Reader,
    diff_part,
    landing,
    pins_of,
    plan_changes,
    same_change,
)
from workers.state.request import DeployRequest, RequestState, Result

log = logging.getLogger(__name__)

# Outside pushers only (workers never race each other): a busy one (a bot bumping images
# several times a second), on a busy host where one attempt takes as long as its cadence.
# The random waits between attempts grow, so some attempt falls into a gap of its beat.
MAX_RACE_ATTEMPTS = 50
RACE_JITTER = 0.05  # seconds, times the attempt number (at most MAX_JITTER)
MAX_JITTER = 1.0


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
    # Raises when a repository's fetched head may not be built on (its signature is not
    # trusted): called with the repository's name and the head.
    verify_head: Callable[[str, str], None] = lambda repository, head: None


def context(request: DeployRequest) -> dict[str, str | None]:
    apps = ",".join(c.app for c in request.changes)
    return {"request_id": request.id, "app": apps, "env": request.env, "actor": request.requester}


Checkouts = Mapping[str, Checkout]  # by repository name, in the policy's order


def reader(checkouts: Checkouts) -> Reader:
    return lambda repository, file: checkouts[repository].read(file)


def _check_not_moved(policy: Policy, read: Reader, request: DeployRequest, repository: str) -> None:
    """Every pin in `repository` holds an approved old version or the new one (where the
    request landed already, the new one)."""
    for change in request.changes:
        pinned = [p for p in pins_of(policy, change.app, change.env) if p.repository == repository]
        held = {pins.read_version(read(p.repository, p.file), p) for p in pinned}
        if not held <= {*change.old.split(MIXED), change.new}:
            now = MIXED.join(sorted(held))
            raise StaleRequest(
                "moved", app=change.app, env=change.env, now=now, old=change.old, new=change.new
            )


def apply_one(
    policy: Policy,
    checkouts: Checkouts,
    request: DeployRequest,
    hooks: BatchHooks,
    repository: str,
) -> str | None:
    """Commit `request`'s part in `repository` on top of its working tree; None when the pins
    there already hold it."""
    read = reader(checkouts)
    _check_not_moved(policy, read, request, repository)
    digests = {b.app: b.digest for b in request.artifacts}
    plan = plan_changes(policy, read, request.changes, digests, only=repository)
    files = plan.changed_files(repository)
    if not files:
        return None
    if not same_change(diff_part(request.diff, repository), plan.diff(repository)):
        raise StaleRequest("diff_changed")
    checkout = checkouts[repository]
    planned = {file: plan.after[(repository, file)] for file in files}
    for file, text in planned.items():
        checkout.write(file, text)  # what the next request of the batch reads and builds on
    env = policy.environments[request.env]
    if env.validate_command and policy.repositories[repository].validate_here:
        # The validator works on a copy of the changed tree (no .git), and the commit is
        # made from `planned`, never from a tree.
        validate(
            env.validate_command,
            Path(checkout.path),
            allowed_env=env.validate_env,
            secrets=hooks.secrets,
            sandbox=hooks.sandbox.with_network(env.validate_network),
        )
    hooks.recheck(request)
    message = commit_message(request, hooks.approvers(request))
    # The author date is when the request was filed, the commit date when it landed: the
    # record `releasegate report` reads a lead time from where no source commit is named.
    filed = {"GIT_AUTHOR_DATE": f"@{int(request.created_at.timestamp())} +0000"}
    return checkout.commit(message, planned, env=filed)


@dataclass
class _Landing:
    """One call's bookkeeping: what landed where, per request, as it happens."""

    policy: Policy
    outcomes: dict[str, Result] = field(default_factory=dict)
    landed: dict[str, dict[str, str]] = field(default_factory=dict)  # request -> repo -> sha
    # Whether the branches' history was searched for the requests' trailers in this call,
    # and whether a push since may have landed unseen (it errored): then it is searched again.
    # A push the remote rejected landed nothing, so a lost race needs no new search.
    searched: bool = False
    unsure: bool = False
    # The repositories this call lands in (a request's others land elsewhere: through a pull
    # request, before or after this call); None: all of each request's.
    only: frozenset[str] | None = None

    def repositories(self, request: DeployRequest) -> list[str]:
        names = list(landing(self.policy, request)[0])
        return names if self.only is None else [n for n in names if n in self.only]

    def end(self, request: DeployRequest, result: Result) -> None:
        """End `request` as `result`; where part of it landed already, say exactly what."""
        landed = self.landed.get(request.id, {})
        if not landed or result.state is not RequestState.FAILED:
            self.outcomes[request.id] = result
            return
        missing = [r for r in self.repositories(request) if r not in landed]
        facts = {
            **result.facts,
            "landed": ", ".join(f"{name} {sha[:7]}" for name, sha in landed.items()),
            "missing": ", ".join(missing),
            "why_reason": result.reason,
            "why": result.message,
        }
        self.outcomes[request.id] = Result(
            state=RequestState.FAILED,
            reason="partly_landed",
            facts=facts,
            commit=next(iter(landed.values())),
            commits=landed,
        )

    def done(self, request: DeployRequest) -> None:
        """`request` is on every branch it changes (or needed no commit anywhere)."""
        landed = self.landed.get(request.id, {})
        if not landed:
            self.outcomes[request.id] = already_there(request)
            return
        ordered = {r: landed[r] for r in self.policy.repositories if r in landed}
        # A repository whose pins already held the change (an earlier request landed there)
        # gets no commit, and the thread says so.
        held = [r for r in self.repositories(request) if r not in landed]
        self.outcomes[request.id] = Result(
            state=RequestState.PUSHED,
            message="pushed",
            commit=next(iter(ordered.values())),
            commits=ordered,
            facts={"unchanged": ", ".join(held)} if held else {},
        )


def apply_batch(
    policy: Policy,
    checkouts: Checkouts,
    requests: Sequence[DeployRequest],
    hooks: BatchHooks,
    max_attempts: int = MAX_RACE_ATTEMPTS,
    only: frozenset[str] | None = None,
) -> dict[str, Result]:
    """Land what can land of `requests` (in the repositories `only` names, where given);
    returns how each one ended, by request id."""
    state = _Landing(policy, landed={r.id: {} for r in requests}, only=only)
    todo = list(requests)
    for attempt in range(1, max_attempts + 1):
        started = time.monotonic()
        heads, todo = _sync(policy, checkouts, todo, hooks, state)
        _mark("fetched", todo)
        todo, committed = _prepare(policy, checkouts, todo, hooks, state, heads)
        _mark("committed", todo)
        if not any(committed.values()):
            for request in todo:
                state.done(request)
            return state.outcomes
        applied = time.monotonic()
        todo, again = _land(checkouts, todo, committed, heads, hooks, state)
        if again:
            log.info("attempt %d/%d: fetching and preparing again", attempt, max_attempts)
            # A little random wait from the second loss on: an outside writer that pushes on
            # a steady beat would otherwise win every race that starts at the same point.
            if attempt > 1:
                wait = min(MAX_JITTER, RACE_JITTER * attempt)
                time.sleep(random.uniform(0, wait))  # noqa: S311 - not a secret
            continue
        log.info(
            "pushed %d commit(s) after %d attempt(s): fetch and apply %.0f ms, push %.0f ms",
            sum(len(c) for c in committed.values()),
            attempt,
            (applied - started) * 1000,
            (time.monotonic() - applied) * 1000,
        )
        for request in todo:
            state.done(request)
        return state.outcomes
    for request in todo:
        facts = {"attempts": str(max_attempts)}
        state.end(request, Result(state=RequestState.FAILED, reason="kept_moving", facts=facts))
    return state.outcomes


def _mark(step: str, requests: Sequence[DeployRequest]) -> None:
    for request in requests:
        spans.mark(step, request.id)


def _repositories(state: _Landing, requests: Sequence[DeployRequest]) -> list[str]:
    used = {name for r in requests for name in state.repositories(r)}
    return [name for name in state.policy.repositories if name in used]


def _sync(
    policy: Policy,
    checkouts: Checkouts,
    todo: list[DeployRequest],
    hooks: BatchHooks,
    state: _Landing,
) -> tuple[dict[str, str], list[DeployRequest]]:
    """Fetch every repository the requests need; a request needing one that cannot be read
    (or whose head is not trusted) ends here. Returns the heads, and the requests left."""
    heads: dict[str, str] = {}
    for request in todo:
        if not policy.repositories_for(request.changes):
            apps = ", ".join(c.app for c in request.changes)
            why = PinError(f"the policy no longer pins {apps} in {request.env}; nothing landed")
            state.end(request, failed(why))
    todo = [r for r in todo if r.id not in state.outcomes]
    for name in _repositories(state, todo):
        try:
            heads[name] = checkouts[name].sync()
            hooks.verify_head(name, heads[name])
        except ReleasegateError as exc:
            for request in todo:
                if name in state.repositories(request):
                    state.end(request, Result(state=RequestState.FAILED, message=str(exc)))
            todo = [r for r in todo if r.id not in state.outcomes]
    return heads, todo


def _prepare(
    policy: Policy,
    checkouts: Checkouts,
    todo: list[DeployRequest],
    hooks: BatchHooks,
    state: _Landing,
    heads: dict[str, str],
) -> tuple[list[DeployRequest], dict[str, list[tuple[DeployRequest, str]]]]:
    """Commit every request's part in every repository where it has not landed yet, on top of
    the fetched heads. Returns the requests still going, and the commits by repository."""
    # Only a request whose push may have been tried can be on the branch already; its
    # commit comes after the head it was read at, so the search reads no further back.
    search = not state.searched or state.unsure
    maybe = [r for r in todo if search and hooks.maybe_pushed(r)]
    found: dict[str, dict[str, str]] = {}
    for name in heads:
        since = [r.bases.get(name) for r in maybe if name in state.repositories(r)]
        found[name] = checkouts[name].request_commits(since) if since else {}
    state.searched, state.unsure = True, False
    committed: dict[str, list[tuple[DeployRequest, str]]] = {name: [] for name in heads}
    tips = dict(heads)  # each working tree's head as the requests are committed on it
    ready = []
    for request in todo:
        with request_context(**context(request)):
            landed = state.landed[request.id]
            names = state.repositories(request)
            good = {name: tips[name] for name in names}
            mine: dict[str, str] = {}
            try:
                for name in names:
                    if name in landed:
                        continue
                    sha = found[name].get(request.id)
                    why = not_ours(policy, checkouts[name], request, sha, name) if sha else "-"
                    if sha and not why:
                        log.info("already committed in %s as %s", name, sha[:7])
                        landed[name] = sha
                        continue
                    if sha:
                        log.warning("%s carries the request's trailer, but %s", sha[:7], why)
                    if made := apply_one(policy, checkouts, request, hooks, name):
                        mine[name] = made
                        tips[name] = made
            except ReleasegateError as exc:
                log.warning("dropped from the batch: %s", exc)
                for name, head in good.items():
                    checkouts[name].reset_to(head)
                tips.update(good)  # its commits in earlier repositories are dropped too
                state.end(request, failed(exc))
                continue
            for name, sha in mine.items():
                committed[name].append((request, sha))
            ready.append(request)
    return ready, committed


def _land(
    checkouts: Checkouts,
    todo: list[DeployRequest],
    committed: dict[str, list[tuple[DeployRequest, str]]],
    heads: dict[str, str],
    hooks: BatchHooks,
    state: _Landing,
) -> tuple[list[DeployRequest], bool]:
    """Push each repository's commits, in the policy's order. Returns the requests still
    going, and whether to prepare again (a lost race, or a push refused: what is stacked on
    the refused commits in later repositories must be made again without them)."""
    for name, pushes in committed.items():
        if not pushes:
            continue
        checkout = checkouts[name]
        requests = [request for request, _sha in pushes]
        # A lost lease raises here: the lanes' next holder finishes the batch.
        hooks.before_push(requests)
        try:
            checkout.verify_unpushed(heads[name])
        except TamperedCommit as exc:
            log.error("nothing pushed to %s: %s", name, exc)
            checkout.discard()  # whatever made it so, the slot is made again
            return _drop(todo, requests, f"nothing was pushed: {exc}", state), True
        try:
            checkout.push()
        except PushRejected as exc:
            if checkout.fetch() != heads[name]:
                log.info("%s moved under the push: %s", name, exc)
                hooks.on_retry()
                return todo, True
            message = f"the remote refused the push: {exc}"
            return _drop(todo, requests, message, state), True
        except RemoteUnreachable as exc:
            state.unsure = True  # whatever it says, look at the branch's history next time
            if not _landed_anyway(checkout):
                return _drop(todo, requests, str(exc), state), True
            log.warning("the push reported %s, but the remote has our commits", exc)
        for request, sha in pushes:
            state.landed[request.id][name] = sha
    return todo, False


def _drop(
    todo: list[DeployRequest], requests: list[DeployRequest], message: str, state: _Landing
) -> list[DeployRequest]:
    for request in requests:
        state.end(request, Result(state=RequestState.FAILED, message=message))
    return [r for r in todo if r.id not in state.outcomes]


def partly(
    policy: Policy, request: DeployRequest, landed: dict[str, str], failure: Result
) -> Result:
    """How `request` ends when `failure` stopped it after `landed` (repository -> commit):
    saying exactly what landed where and what did not."""
    if failure.reason == "partly_landed":  # a failure that said it already: its own cause
        failure = Result(
            state=RequestState.FAILED,
            reason=failure.facts.get("why_reason", ""),
            message=failure.facts.get("why", ""),
            facts=failure.facts,
        )
    state = _Landing(policy, landed={request.id: dict(landed)})
    state.end(request, failure)
    return state.outcomes[request.id]


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
