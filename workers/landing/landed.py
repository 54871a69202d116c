"""What a landed request sets going, before it is ended (so a crash in between, whose re-run
finds the commit and ends it, finds all of this done already: each step is idempotent).

- the artifacts it landed, kept for the records of a later rollback;
- the delivery figures' counts (a deploy and its lead time; a rollback's failure and time
  to restore);
- the soak clock of each app (`pushed`);
- following its rollout, or, with none to follow, its verification.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from config.policy import Policy
from workers.rollout import follow
from workers.rollout import verify as verification
from workers.state import metrics
from workers.state.request import DeployRequest
from workers.state.store import RequestStore
from workers.state.verdicts import Verdicts


def after_landing(
    store: RequestStore, policy: Policy, request: DeployRequest, commits: Mapping[str, str]
) -> None:
    redis = store.redis
    landed_at = time.time()
    verdicts = Verdicts(redis)
    verdicts.saw(request.env, request.artifacts)
    _count_delivery(store, verdicts, request, landed_at)
    for change in request.changes:
        verdicts.ran(policy, request.env, change.app, change.new, "pushed", landed_at, request.id)
    if follow.start(redis, policy, request, commits) is None:
        verification.start(redis, policy, request, landed_at, announce=False)


def _count_delivery(
    store: RequestStore, verdicts: Verdicts, request: DeployRequest, landed_at: float
) -> None:
    """The delivery figures' counts for a landed request: a deploy and its lead time, or a
    rollback: a change failure where a person asked for it, and the time to restore."""
    redis, env = store.redis, request.env
    apps = [c.app for c in request.changes]
    rollback = request.verb == "rollback"
    lead = landed_at - request.created_at.timestamp()
    metrics.record_delivery(redis, env, apps, lead, rollback and not request.rollback_of)
    if not rollback:
        return
    if request.rollback_of:
        failed = store.result(request.rollback_of)
        since = failed.finished_at.timestamp() if failed is not None else None
    else:
        before = [r for c in request.changes if (r := verdicts.running(env, c.app))]
        since = min((r.landed for r in before if r.landed), default=None)
    if since is not None:
        metrics.record_restore(redis, env, apps, max(0.0, landed_at - since))
