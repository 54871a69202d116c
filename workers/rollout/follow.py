"""Following a rollout after the push, until the reconciler runs the pushed commit healthy.

A pushed request whose environment has `rollout:` gets a record in Redis and an entry in
a sorted set scored by when to look next. Every worker process runs a `rollouts` loop
that claims due entries (moving their score a lease ahead, atomically, so two loops never
ask at once), asks the reconciler once per application and schedules the next look. So
following survives restarts of bots and workers, and never holds a deploy worker.

A target is done when the reconciler runs the pushed commit or a descendant of it,
`Synced` and `Healthy`; `Degraded` (or a failed operation) ends it at once; the timeout
ends what is left. When every target is done, the news goes to the channel's outbox in
the same script that marks the record ended, so it is told once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Literal, cast

from pydantic import BaseModel
from redis import Redis

from config.errors import ReconcilerError, ReconcilerRefused, UnknownRequest
from config.policy import Policy
from config.rollout import Rollout
from workers.rollout import verify as verification
from workers.rollout.reconcilers import Reconciler, TargetStatus, reconciler_for
from workers.state import keys, metrics
from workers.state.outbox import report_to
from workers.state.request import DeployRequest
from workers.state.store import RequestStore
from workers.state.verdicts import Verdicts

log = logging.getLogger(__name__)

DUE = keys.ROLLOUTS_DUE
POLL = 3.0  # seconds between looks while following: nobody waits long for the news
CLAIM = 30.0  # a claimed look not finished by then is taken by another loop
KEEP = 30 * 24 * 3600
AT_ONCE = 8  # applications asked at the same time
# A reconciler's revision names a commit only whole, or by at least 12 hex characters.
WHOLE_REVISION = re.compile(r"[0-9a-f]{12,64}")

TargetState = Literal["following", "healthy", "degraded", "timeout", "error"]


class Target(BaseModel):
    app: str
    name: str  # the Argo CD application or Flux object
    state: TargetState = "following"
    last: str = ""  # what the reconciler said last, or why it could not be asked
    asked: bool = False  # the first look (sync or reconcile, refresh) went through
    seconds: float | None = None  # from the push to healthy
    commit: str = ""  # the commit it must run (in its app's repository); the record's if empty


class RolloutRecord(BaseModel):
    request: str
    env: str
    commit: str
    reconciler: str  # "Argo CD" | "Flux"
    started: float
    deadline: float
    targets: list[Target]
    ended: bool = False

    @property
    def timeout(self) -> float:
        return self.deadline - self.started


def _key(request_id: str) -> str:
    return keys.rollout(request_id)


def load(redis: Redis, request_id: str) -> RolloutRecord | None:
    raw = cast(bytes | None, redis.get(_key(request_id)))
    return RolloutRecord.model_validate_json(raw) if raw else None


def start(
    redis: Redis, policy: Policy, request: DeployRequest, commits: Mapping[str, str]
) -> RolloutRecord | None:
    """Begin following `request`'s push, if its environment says how; returns the record.

    `commits` is what landed, by repository. Each app is followed to the commit of the
    repository its reconciler watches (the app's); an app whose repository got no commit
    (its change was only in, say, a Terraform repository), or whose repository no reconciler
    watches (`reconciled: false`), has nothing to follow: it ends at pushed."""
    rollout = policy.environments[request.env].rollout
    if rollout is None:
        return None
    now = time.time()
    watched = {name for name, repo in policy.repositories.items() if repo.reconciled}
    targets = [
        Target(app=c.app, name=rollout.target(c.app, c.env), commit=commit)
        for c in request.changes
        if (where := policy.app_repository(c.app)) in watched and (commit := commits.get(where))
    ]
    if not targets:
        return None
    deadline = now + rollout.timeout.total_seconds()
    record = RolloutRecord(
        request=request.id,
        env=request.env,
        commit=targets[0].commit,
        reconciler="Argo CD" if rollout.argocd else "Flux",
        started=now,
        deadline=deadline,
        targets=targets,
    )
    pipe = redis.pipeline()
    pipe.set(_key(request.id), record.model_dump_json(), ex=KEEP, nx=True)
    pipe.zadd(DUE, {request.id: now})
    pipe.execute()
    return record


# KEYS: due set. ARGV: now, lease end, how many.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
"""

# KEYS: record, due set. ARGV: request id, record json, outbox stream, its length.
# Ends the record and queues the news once, whoever gets here first.
_END = """
local old = redis.call('GET', KEYS[1])
if not old or cjson.decode(old)['ended'] then redis.call('ZREM', KEYS[2], ARGV[1]) return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('XADD', ARGV[3], 'MAXLEN', '~', ARGV[4], '*',
           'request', ARGV[1], 'kind', 'rollout')
return 1
"""


def claim(redis: Redis, count: int = 10, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    ids = redis.eval(_CLAIM, 1, DUE, now, now + CLAIM, count)
    return [i.decode() if isinstance(i, bytes) else str(i) for i in cast(list[Any], ids)]


def reached(status: TargetStatus, commit: str, is_ancestor: Callable[[str, str], bool]) -> bool:
    """Whether the reconciler runs `commit` or a commit after it. Its revision counts only
    whole: a full object name, or at least 12 hex characters (Flux's `6.0.0+SHA12`) that
    resolve to our commit or a descendant; `5` or `abc` names nothing."""
    revision = status.revision.lower()
    if not WHOLE_REVISION.fullmatch(revision):
        return False
    return commit.startswith(revision) or is_ancestor(commit, revision)


def look(
    record: RolloutRecord,
    reconciler: Reconciler,
    is_ancestor: Callable[[str, str], bool],
    now: float,
) -> None:
    """Ask the reconciler once about each target still followed (all at once: one slow
    application delays no other), and update the record."""

    def one(target: Target) -> None:
        try:
            if not target.asked:  # retried at the next look if the reconciler was away
                reconciler.nudge(target.name, target.commit or record.commit)
            status = reconciler.status(target.name, refresh=not target.asked)
            target.asked = True
        except ReconcilerRefused as exc:
            target.state, target.last = "error", str(exc)
            return
        except ReconcilerError as exc:  # down or slow: keep trying until the timeout
            target.last = f"cannot ask {reconciler.name}: {exc}"
            return
        target.last = status.line()
        at_commit = reached(status, target.commit or record.commit, is_ancestor)
        if status.failed or (at_commit and status.health == "Degraded"):
            target.state = "degraded"
            target.last = status.message or status.line()
        elif at_commit and status.sync == "Synced" and status.health == "Healthy":
            target.state, target.seconds = "healthy", round(now - record.started, 1)

    following = [t for t in record.targets if t.state == "following"]
    with ThreadPoolExecutor(max(1, min(AT_ONCE, len(following))), "rollout-look") as pool:
        list(pool.map(one, following))
    if now >= record.deadline:
        for target in record.targets:
            if target.state == "following":
                target.state = "timeout"
    record.ended = all(t.state != "following" for t in record.targets)


def follow(
    redis: Redis,
    request: DeployRequest,
    reconciler: Callable[[], Reconciler],
    is_ancestor: Callable[[str, str], bool],
    now: float | None = None,
    on_healthy: Callable[[DeployRequest, float], None] | None = None,
) -> RolloutRecord | None:
    """One look at a claimed rollout; when it ends, its news is queued once. `on_healthy`
    runs before that when every target is healthy (it starts the verification; it must be
    idempotent: a worker that dies before the news runs it again)."""
    now = time.time() if now is None else now
    record = load(redis, request.id)
    if record is None or record.ended:
        redis.zrem(DUE, request.id)
        return record
    try:
        client = reconciler()
    except ReconcilerRefused as exc:  # not configured: say so once, instead of looking forever
        for target in record.targets:
            target.state, target.last = "error", str(exc)
        record.ended = True
    else:
        look(record, client, is_ancestor, now)
    if not record.ended:
        pipe = redis.pipeline()
        pipe.set(_key(request.id), record.model_dump_json(), keepttl=True)
        pipe.zadd(DUE, {request.id: now + POLL})
        pipe.execute()
        return record
    if on_healthy is not None and all(t.state == "healthy" for t in record.targets):
        on_healthy(request, now)
    told = redis.eval(
        _END,
        2,
        _key(request.id),
        DUE,
        request.id,
        record.model_dump_json(),
        report_to(request),
        keys.OUTBOX_MAXLEN,
    )
    if told:
        outcome = (
            "healthy"
            if all(t.state == "healthy" for t in record.targets)
            else next(t.state for t in record.targets if t.state != "healthy")
        )
        seconds = now - record.started if outcome == "healthy" else None
        metrics.record_rollout(redis, record.env, outcome, seconds)
        log.info("rollout of %s in %s ended: %s", record.commit[:7], record.env, outcome)
    return record


def follow_round(
    redis: Redis,
    policy: Callable[[], Policy],
    argocd_url: str | None,
    argocd_token: str | None,
    is_ancestor: Callable[[str, str], bool],
    now: float | None = None,
    ended: Callable[[Policy, DeployRequest], None] | None = None,
) -> float:
    """One round of a worker's `rollouts` loop: look at every due rollout once, all at once
    (each answer is bounded in time, and a slow one holds up no other). A rollout that ends
    healthy moves the soak clock and starts the verification, where the policy asks."""
    store = RequestStore(redis)
    due = claim(redis, now=now)
    if not due:
        return 1.0  # the policy is read only when there is something to look at
    current = policy()

    def healthy(request: DeployRequest, at: float) -> None:
        verdicts = Verdicts(redis)
        for change in request.changes:
            verdicts.ran(current, request.env, change.app, change.new, "healthy", at, request.id)
        verification.start(redis, current, request, at)

    def one(request_id: str) -> None:
        try:
            request = store.get(request_id)
        except UnknownRequest:
            redis.zrem(DUE, request_id)
            return
        env = current.environments.get(request.env)
        spec = env.rollout if env is not None else None
        client = partial(_client, spec, request.env, argocd_url, argocd_token)
        record = follow(redis, request, client, is_ancestor, now, on_healthy=healthy)
        if record is not None and record.ended and ended is not None:
            ended(current, request)

    with ThreadPoolExecutor(max(1, min(AT_ONCE, len(due))), "rollout-round") as pool:
        list(pool.map(one, due))
    return 1.0


def _client(
    spec: Rollout | None, env: str, argocd_url: str | None, argocd_token: str | None
) -> Reconciler:
    if spec is None:
        raise ReconcilerRefused(f"the policy no longer follows rollouts in {env}")
    return reconciler_for(spec, argocd_url, argocd_token)
