"""How a running request ends: recorded, counted, audited and told once; and, where it
landed, the pending requests it made stale (they would move a pin from a version it no
longer holds), each closed with its card and thread saying so."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from workers.landing.batch import context
from workers.logs import request_context
from workers.state import audit, metrics, outbox
from workers.state.queue import enqueue_forge
from workers.state.request import DeployRequest, RequestState, Result
from workers.state.store import RequestStore

log = logging.getLogger(__name__)


def end(store: RequestStore, request: DeployRequest, outcome: Result) -> None:
    """Record how a running request ended, count it, and queue the news for its channel."""
    redis = store.redis
    result = outcome.model_copy(update={"finished_at": datetime.now(UTC)})
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
