"""Landing through the forge: a pull (merge) request per request, merged on quorum.

With `repository.merge_request`, the request's change is committed on a branch
`releasegate/ID`, pushed, and a merge request is opened as soon as the request is made (a
job of its own), so the forge's checks run while people approve; the thread and the card
link it. On quorum the lane's holder merges it through the forge's API with the commit
message a direct push would carry (subject, body, trailers, the approvals included). A
merge the forge refuses for now (checks, conflicts, reviews) is said in the thread with the
forge's words, once per reason, and tried again every RETRY seconds until the request
expires. A cancelled, rejected or expired request closes its merge request and deletes its
branch. releasegate never approves a merge request in the forge on anyone's behalf.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence

from redis import Redis

from config.errors import ReleasegateError
from config.policy import Policy
from config.repository import FORGE_TOKEN_ENV
from config.settings import Settings
from workers.git.checkout import Checkout
from workers.landing.batch import BatchHooks, already_there, apply_one, context, failed
from workers.landing.commit import commit_message
from workers.landing.forges import (
    Forge,
    ForgeError,
    HeadMoved,
    MergeRefused,
    MergeRequest,
    forge_for,
)
from workers.landing.provenance import not_ours
from workers.logs import request_context
from workers.rules.plan import decide_landing, landing
from workers.state import keys, outbox
from workers.state.request import Change, DeployRequest, RequestState, Result
from workers.state.store import RequestStore

log = logging.getLogger(__name__)

RETRY = 15.0  # seconds between merge attempts the forge refused
CHECKS_EVERY = 20.0  # seconds between looks at the checks of waiting merge requests
OPENING_CLAIM = 120  # seconds: a worker that died while opening does not block it for good


def branch_of(request: DeployRequest) -> str:
    return f"releasegate/{request.id}"


def repository_of(policy: Policy, request: DeployRequest | Sequence[Change]) -> str:
    """The repository whose merge request lands `request` (or these changes), or its part
    there: the one of its repositories with `merge_request`. A request's other repositories
    are pushed to, in the policy's order around the merge; two repositories landing through
    merge requests in one request are refused (one merge request per request)."""
    if isinstance(request, DeployRequest):
        _names, forged = landing(policy, request)
    else:
        _names, forged = decide_landing(policy, request)
    if not forged:
        raise ReleasegateError("this change lands through no merge request")
    return forged


def forge_of(policy: Policy, settings: Settings, name: str) -> Forge | None:
    """The forge that repository `name` lands through, with its token; None when it pushes."""
    spec = policy.repositories[name].merge_request
    if spec is None:
        return None
    token = os.environ.get(spec.token_env)
    if spec.token_env == FORGE_TOKEN_ENV and settings.forge_token is not None:
        token = settings.forge_token.get_secret_value()
    if not token:
        raise ForgeError(
            f"repositories.{name}.merge_request is set, but {spec.token_env} (its forge "
            "token) is not"
        )
    return forge_for(spec.forge, spec.api_url, spec.project, token)


def _message(request: DeployRequest, approvers: list[str]) -> tuple[str, str]:
    subject, _, body = commit_message(request, approvers).partition("\n\n")
    return subject, body


def _push_change(
    policy: Policy,
    name: str,
    checkout: Checkout,
    request: DeployRequest,
    approvers: list[str],
    verify_head: Callable[[str], None],
) -> str | None:
    """Commit the change on top of the branch's head (its message crediting `approvers`) and
    push it to the request's own branch; returns the commit pushed, None when the pins
    already hold the change."""
    with checkout.in_slot():
        head = checkout.sync()
        verify_head(head)
        try:
            hooks = BatchHooks(recheck=lambda r: None, approvers=lambda r: approvers)
            pushed = apply_one(policy, {name: checkout}, request, hooks, name)
            if pushed is None:
                return None
            checkout.verify_unpushed(head)
            checkout.push_branch(branch_of(request))
        finally:
            checkout.reset_to(head)
    return pushed


def open_for(
    policy: Policy,
    name: str,
    checkout: Checkout,
    forge: Forge,
    store: RequestStore,
    request: DeployRequest,
    verify_head: Callable[[str], None] = lambda head: None,
) -> MergeRequest | None:
    """Commit the change on its own branch, push it, open the merge request; None when the
    pins already hold it (nothing to propose). The commit pushed is kept on the request:
    only a merge request whose head is still that commit is ever merged."""
    if known := store.merge_request(request.id):
        return MergeRequest(int(known["number"]), str(known["url"]))
    # The opening job and a quick approval's merge may both get here: one opens, the other
    # waits for it (a second merge request for the branch would be refused by the forge).
    opening = keys.opening(request.id)
    if not store.redis.set(opening, 1, nx=True, ex=OPENING_CLAIM):
        raise MergeRefused(f"its {noun_of(policy, name)} is being opened")
    try:
        pushed = _push_change(policy, name, checkout, request, [], verify_head)
        if pushed is None:
            return None
        subject, body = _message(request, [])
        mr = forge.open(branch_of(request), policy.repositories[name].branch, subject, body)
        store.set_merge_request(
            request.id,
            {"number": mr.number, "url": mr.url, "branch": branch_of(request), "head": pushed},
        )
    finally:
        store.redis.delete(opening)
    outbox.note(store.redis, request, "pr_opened", url=mr.url, noun=noun_of(policy, name))
    return mr


def noun_of(policy: Policy, name: str) -> str:
    """What repository `name`'s forge calls a merge request (GitHub: a pull request)."""
    spec = policy.repositories[name].merge_request
    return spec.noun if spec is not None else "merge request"


def _check_pull(forge: Forge, mr: MergeRequest, pushed: str, branch: str, noun: str) -> None:
    """Refuse to merge a merge request that is not the one releasegate pushed: its head must
    be our commit and its base the policy's branch."""
    now = forge.pull(mr)
    if now.head != pushed:
        raise HeadMoved(
            f"the {noun}'s head is {now.head[:12] or 'gone'}, not {pushed[:12]}, the "
            f"commit releasegate pushed: someone pushed to {mr.url}; nothing was merged, "
            "ask again with a new request"
        )
    if now.base != branch:
        raise HeadMoved(
            f"the {noun} {mr.url} now merges into {now.base or 'nothing'}, not "
            f"{branch}; nothing was merged, ask again with a new request"
        )


def land(
    policy: Policy,
    name: str,
    checkout: Checkout,
    forge: Forge,
    store: RequestStore,
    request: DeployRequest,
    hooks: BatchHooks,
) -> Result | None:
    """Merge the request's merge request; None when the forge refused for now (retried).

    What merges is what was approved: the merge request's head must be the commit
    releasegate pushed (and the merge call names it, so the forge refuses a head that moves
    in between), its base the policy's branch, and the branch's head trusted when
    `trusted_signers` is set. After the merge, the commit the forge names must be on the
    branch and make exactly the approved change."""
    spec = policy.repositories[name].merge_request
    if spec is None:
        raise ReleasegateError("the policy no longer lands through merge requests")
    branch = policy.repositories[name].branch

    def verify_head(head: str) -> None:
        hooks.verify_head(name, head)

    try:
        with checkout.in_slot():
            checkout.sync()
            found = checkout.request_commits([request.bases.get(name)]).get(request.id)
            if found and (why := not_ours(policy, checkout, request, found, name, by_forge=True)):
                log.warning("%s carries the request's trailer, but %s", found[:7], why)
                found = None
        if found:  # merged by a worker that died before it could say so
            return Result(
                state=RequestState.MERGED, message="merged", commit=found, commits={name: found}
            )
        hooks.recheck(request)
        mr = open_for(policy, name, checkout, forge, store, request, verify_head)
        if mr is None:
            return already_there(request)
        approvers = list(hooks.approvers(request))
        known = store.merge_request(request.id) or {}
        method = forge.method_for(spec.merge_method)
        if method == "rebase" and known.get("approved_by") != approvers:
            # The branch's own commit lands: it must carry the approvals a direct push's would.
            # Rewritten once per set of approvers (new checks run on it; the retry waits).
            pushed = _push_change(policy, name, checkout, request, approvers, verify_head)
            known = {**known, "approved_by": approvers, "head": pushed}
            store.set_merge_request(request.id, known)
        pushed = str(known.get("head") or "")
        if not pushed:
            raise ForgeError(
                "releasegate does not know the commit it pushed for this pull "
                "request; ask again with a new request"
            )
        _check_pull(forge, mr, pushed, branch, spec.noun)
        with checkout.in_slot():
            verify_head(checkout.fetch())  # the head it merges into, trusted now
        subject, body = _message(request, approvers)
        sha = forge.merge(mr, method, subject, body, head=pushed)
    except MergeRefused as exc:
        if store.wait_until(request.id, time.time() + RETRY, str(exc)):
            outbox.note(store.redis, request, "merge_refused", why=str(exc))
        log.info("merge refused for now: %s", exc)
        return None
    except ReleasegateError as exc:
        close(policy, forge, store, request)
        return failed(exc)
    try:
        forge.delete_branch(branch_of(request))
    except ReleasegateError as exc:  # GitLab removed it with the merge; nothing lost either way
        log.debug("branch not deleted: %s", exc)
    return _confirm_merge(policy, name, checkout, request, mr, sha)


def _confirm_merge(
    policy: Policy,
    name: str,
    checkout: Checkout,
    request: DeployRequest,
    mr: MergeRequest,
    sha: str,
) -> Result:
    """The forge said it merged as `sha`: believe it once `sha` is on the branch and makes the
    approved change. Nothing is reverted behind anyone's back; a mismatch is said."""
    branch = policy.repositories[name].branch
    with checkout.in_slot():
        try:
            checkout.fetch()
        except ReleasegateError as exc:
            return Result(
                state=RequestState.FAILED,
                commit=sha or None,
                message=f"{mr.url} was merged, but {branch} could not be read to confirm it: {exc}",
            )
        if not sha or not checkout.is_on_branch(sha):
            return Result(
                state=RequestState.FAILED,
                commit=sha or None,
                message=f"the forge said {mr.url} merged as {sha[:12] or 'nothing'}, "
                f"but that commit is not on {branch}",
            )
        if why := not_ours(policy, checkout, request, sha, name, by_forge=True):
            return Result(
                state=RequestState.FAILED,
                commit=sha,
                message=f"{mr.url} merged as {sha[:12]} on {branch}, but {why}; "
                "look at that commit",
            )
    return Result(
        state=RequestState.MERGED, message=f"merged {mr.url}", commit=sha, commits={name: sha}
    )


def close(policy: Policy, forge: Forge, store: RequestStore, request: DeployRequest) -> None:
    known = store.merge_request(request.id)
    if known is None:
        return
    try:
        forge.close(MergeRequest(int(known["number"]), str(known["url"])), str(known["branch"]))
    except ReleasegateError as exc:
        log.warning("could not close %s: %s", known["url"], exc)


def note_not_opened(redis: Redis, request: DeployRequest, why: Exception, noun: str) -> None:
    outbox.note(redis, request, "pr_not_opened", why=str(why), noun=noun)


def merge_batch(
    policy: Policy,
    settings: Settings,
    name: str,
    checkout: Checkout,
    store: RequestStore,
    batch: list[DeployRequest],
    hooks: BatchHooks,
) -> dict[str, Result]:
    """Merge each request's merge request through the forge; one the forge refused for now
    goes back to approved, to be tried again after its wait (the sweeper queues it)."""
    outcomes: dict[str, Result] = {}
    try:
        forge = forge_of(policy, settings, name)
        if forge is None:
            raise ReleasegateError("the policy no longer lands through merge requests")
    except ReleasegateError as exc:
        return {
            request.id: Result(state=RequestState.FAILED, message=str(exc)) for request in batch
        }
    for request in batch:
        with request_context(**context(request)):
            outcome = land(policy, name, checkout, forge, store, request, hooks)
        if outcome is None:
            store.transition(request.id, [RequestState.RUNNING], RequestState.APPROVED)
        else:
            outcomes[request.id] = outcome
    return outcomes


def checks_round(redis: Redis, policy: Callable[[], Policy], settings: Settings) -> float:
    """One round of a worker's `checks` loop: for every pending request with a merge request,
    ask the forge how its checks stand, and tell the thread (and the card) when that changed."""
    current = policy()
    if all(repo.merge_request is None for repo in current.repositories.values()):
        return CHECKS_EVERY
    store = RequestStore(redis, settings.retention)
    for request_id in store.pending_all():
        known = store.merge_request(request_id)
        if known is None:
            continue
        try:
            forge = forge_of(current, settings, repository_of(current, store.get(request_id)))
        except ReleasegateError as exc:
            log.info("cannot ask the forge about %s: %s", request_id, exc)
            continue
        if forge is None:
            continue
        mr = MergeRequest(int(known["number"]), str(known["url"]))
        try:
            state = forge.checks(mr, str(known["branch"]))
        except ReleasegateError as exc:
            log.info("cannot read the checks of %s: %s", mr.url, exc)
            continue
        if known.get("checks") != state:
            store.set_merge_request(request_id, {**known, "checks": state})
            outbox.note(redis, store.get(request_id), "checks", state=state, url=mr.url)
    return CHECKS_EVERY
