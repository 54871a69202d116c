"""The rollback releasegate files itself when a verification fails.

It restores what ran before the request, every app of it, in every repository: each pin
goes back to the version (and the digest, where the pins carry one) it held at the
request's base. It is filed approved, as `releasegate:verification`, and lands through the
same lanes, plan, validator and integrity checks as every commit; approvals, windows and
locks do not hold it back. An app whose pins moved on since (another deploy landed) is
left as it is: rolling it back would undo someone else's change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

from redis import Redis

from config.errors import ReleasegateError
from config.policy import Policy
from workers.git.mirrors import View
from workers.rules.plan import (
    MIXED,
    current_version,
    decide_landing,
    digests_held,
    plan_changes,
)
from workers.state import keys
from workers.state.queue import enqueue_deploy
from workers.state.request import Built, Change, DeployRequest, RequestState, new_request_id
from workers.state.store import RequestStore
from workers.state.verdicts import Verdicts

log = logging.getLogger(__name__)

REQUESTER = "releasegate:verification"


def plan_rollback(
    policy: Policy,
    view: View,
    request: DeployRequest,
    reason: str,
    request_id: str,
    redis: Redis | None = None,
) -> tuple[DeployRequest | None, list[str]]:
    """The rollback of `request` as of `view`, and the apps it leaves (they moved on, or had
    no single version before)."""
    changes, built, left = [], [], []
    for change in request.changes:
        now = current_version(policy, view.read, change.app, change.env)
        if now != change.new or not change.old or MIXED in change.old:
            left.append(change.app)
            continue
        changes.append(Change(app=change.app, env=change.env, old=change.new, new=change.old))

        def at_base(repository: str, file: str) -> str:
            base = request.bases.get(repository, request.base_commit)
            text = view[repository].read_at(base, file)
            if text is None:
                raise ReleasegateError(f"{file} is not in {repository} at {base[:7]}")
            return text

        held = sorted(digests_held(policy, at_base, change.app, change.env))[:1]
        seen = Verdicts(redis).artifact(change.env, change.app, change.old) if redis else None
        if held:  # what the pins held is what they hold again
            built.append(
                Built(
                    app=change.app,
                    tag=change.old,
                    digest=held[0],
                    source=seen.source if seen else "",
                    revision=seen.revision if seen else "",
                )
            )
        elif seen is not None:  # its artifact as it landed then, for the records
            built.append(seen)
    if not changes:
        return None, left
    digests = {b.app: b.digest for b in built}
    diff = plan_changes(policy, view.read, changes, digests).diff()
    repositories, merge_request_in = decide_landing(policy, changes)
    now_at = datetime.now(UTC)
    rollback = DeployRequest(
        id=request_id,
        verb="rollback",
        env=request.env,
        changes=tuple(changes),
        requester=REQUESTER,
        requester_name="releasegate",
        channel=request.channel,
        thread=request.thread,
        approvals_needed=0,
        created_at=now_at,
        base_commit=view.head,
        bases={name: snapshot.head for name, snapshot in view.snapshots.items()},
        diff=diff,
        artifacts=tuple(built),
        rollback_of=request.id,
        reason=reason,
        repositories=repositories,
        merge_request_in=merge_request_in,
    )
    return rollback, left


def file_rollback(
    redis: Redis,
    policy: Policy,
    view: Callable[[], View],
    request: DeployRequest,
    reason: str,
) -> tuple[str | None, list[str]]:
    """File and queue the rollback of `request` once (a second call finds the first's); returns
    its id (None when nothing is left to roll back) and the apps it leaves."""
    store = RequestStore(redis)
    step = keys.verification_step(request.id, "rollback")
    redis.set(step, new_request_id(), nx=True, ex=30 * 24 * 3600)
    rollback_id = cast(bytes, redis.get(step) or b"").decode()
    if not store.exists(rollback_id):
        rollback, left = plan_rollback(policy, view(), request, reason, rollback_id, redis)
        if rollback is None:
            redis.set(step, "", keepttl=True)
            return None, left
        store.create(rollback, RequestState.APPROVED)
        log.warning("rolling %s back: %s (%s)", request.id, reason, rollback_id)
    elif not rollback_id:
        return None, [c.app for c in request.changes]
    else:
        rollback = store.get(rollback_id)
        left = sorted({c.app for c in request.changes} - {c.app for c in rollback.changes})
    enqueue_deploy(redis, rollback_id)  # idempotent: a re-run after a crash queues it once
    return rollback_id, left
