"""A request that lands through a merge request in one repository and by push in the others.

The repositories land in the policy's order: those before the merge request's repository are
pushed (the batch's way, one commit each), then the merge request is merged (head-pinned,
as always), then those after it are pushed. A merge the forge refuses for now sends the
request back to wait, and its retry finds what it pushed already by the trailer; a merge
refused for good, or a later push refused, ends it failed saying what landed where.
Nothing that landed is reverted.
"""

from __future__ import annotations

from config.policy import Policy
from config.settings import Settings
from workers.landing import mergerequests
from workers.landing.batch import BatchHooks, Checkouts, already_there, apply_batch, partly
from workers.rules.plan import landing
from workers.state.request import DeployRequest, RequestState, Result
from workers.state.store import RequestStore


def land_mixed(
    policy: Policy,
    settings: Settings,
    checkouts: Checkouts,
    store: RequestStore,
    request: DeployRequest,
    hooks: BatchHooks,
) -> Result | None:
    """How `request` ended, or None when the forge refused its merge for now (it waits)."""
    names, forged = landing(policy, request)
    at = names.index(forged)
    landed: dict[str, str] = {}
    before = frozenset(names[:at])
    if before:
        first = apply_batch(policy, checkouts, [request], hooks, only=before)[request.id]
        if first.state is RequestState.FAILED:
            return first  # nothing merged; what it says landed is all that did
        landed.update(first.commits)
    merged = mergerequests.merge_batch(
        policy, settings, forged, checkouts[forged], store, [request], hooks
    )
    if request.id not in merged:
        return None
    result = merged[request.id]
    if result.state is RequestState.FAILED:
        return partly(policy, request, landed, result) if landed else result
    if result.commit:
        landed[forged] = result.commit
    after = frozenset(names[at + 1 :])
    if after:
        last = apply_batch(policy, checkouts, [request], hooks, only=after)[request.id]
        if last.state is RequestState.FAILED:
            return partly(policy, request, {**landed, **last.commits}, last)
        landed.update(last.commits)
    if not landed:
        return already_there(request)
    ordered = {name: landed[name] for name in names if name in landed}
    return Result(
        state=RequestState.MERGED,
        message=result.message,
        commit=next(iter(ordered.values())),
        commits=ordered,
    )
