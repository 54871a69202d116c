"""Verifying a deploy after its rollout: measurements that decide whether it stays.

A request whose environment has `verify:` gets a record in Redis once its rollout is Synced
and Healthy (right after the push where no rollout is followed), and an entry in a sorted
set scored by when to measure next: at once, then every `interval` (as Argo Rollouts'
analysis runs). Every worker process runs a `verifications` loop that
claims due entries (moving their score a lease ahead, atomically: two loops never measure
one request at once), takes every measurement that is due, and decides:

- `verified` once every series (an app of the request, times a metric) has had `count`
  conclusive measurements with at most `failure_limit` failures;
- `failed` as soon as one series has more failures than that;
- `inconclusive` as soon as one series has more than `inconclusive_limit` inconclusive ones.

The decision is saved first, then acted on (each act idempotent: the failed versions, the
rollback filed once under a fixed id, the lock), then the record is ended in the script that
queues the news, so the thread hears it once even when a worker dies in between: the next
loop finds the decision and finishes the acts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Literal, cast

from pydantic import BaseModel
from redis import Redis

from config.errors import UnknownRequest
from config.policy import Policy
from config.verify import Metric
from workers.git.mirrors import View
from workers.rollout import rollback as rollbacks
from workers.rollout.measure import Measurement, measure
from workers.rules.gates import Lock, Locks
from workers.state import keys, metrics
from workers.state.outbox import Kind, report_to
from workers.state.request import DeployRequest
from workers.state.store import RequestStore
from workers.state.verdicts import Failure, Verdicts

log = logging.getLogger(__name__)

DUE = keys.VERIFICATIONS_DUE
CLAIM = 30.0  # a claimed round not finished by then is taken by another loop
KEEP = 30 * 24 * 3600
AT_ONCE = 8  # measurements taken at the same time

State = Literal["verifying", "verified", "failed", "inconclusive"]
SeriesState = Literal["measuring", "passed", "failed", "inconclusive"]


class Series(BaseModel):
    """One metric of one app: its measurements so far."""

    app: str
    version: str
    metric: Metric
    next_at: float
    state: SeriesState = "measuring"
    done: int = 0  # conclusive measurements
    failed: int = 0
    inconclusive: int = 0
    last: str = ""  # what the last measurement said
    deciding: str = ""  # the failed or inconclusive measurement that ended it

    def take(self, found: Measurement, inconclusive_limit: int, now: float) -> None:
        self.last = found.said
        if found.outcome == "inconclusive":
            self.inconclusive += 1
            if self.inconclusive > inconclusive_limit:
                self.state, self.deciding = "inconclusive", found.said
        else:
            self.done += 1
            if found.outcome == "failure":
                self.failed += 1
                if self.failed > self.metric.failure_limit:
                    self.state, self.deciding = "failed", found.said
        if self.state == "measuring" and self.done >= self.metric.count:
            self.state = "passed"
        self.next_at = now + self.metric.interval.total_seconds()

    def line(self) -> str:
        """`awesome error-rate: 0.21 ≥ 0.05 (2 of 3 failed)`: for the thread."""
        name = f"{self.app} {self.metric.name}"
        said = self.deciding or self.last or "not measured"
        if self.state == "inconclusive":
            return f"{name}: {said} ({self.inconclusive} inconclusive)"
        return f"{name}: {said} ({self.failed} of {self.done} failed)"


class VerificationRecord(BaseModel):
    request: str
    env: str
    started: float
    series: list[Series]
    prometheus: str | None = None
    inconclusive_limit: int = 2
    on_failure: Literal["rollback", "hold"] = "rollback"
    state: State = "verifying"
    decided_at: float | None = None
    rollback: str = ""  # the rollback's request id, once filed
    left: list[str] = []  # apps the rollback left as they were (they moved on since)
    locked: bool = False
    ended: bool = False  # the end was queued for the thread

    @property
    def progress(self) -> tuple[int, int]:
        """Measurements taken and to take, over every series."""
        done = sum(min(s.done, s.metric.count) for s in self.series)
        return done, sum(s.metric.count for s in self.series)

    def why(self) -> str:
        """The values that decided it: the deciding series, or every one when it passed."""
        deciding = [s for s in self.series if s.state in ("failed", "inconclusive")]
        return "; ".join(s.line() for s in (deciding or self.series))


def _key(request_id: str) -> str:
    return keys.verification(request_id)


def load(redis: Redis, request_id: str) -> VerificationRecord | None:
    raw = cast(bytes | None, redis.get(_key(request_id)))
    return VerificationRecord.model_validate_json(raw) if raw else None


def latest(redis: Redis, envs: list[str]) -> dict[tuple[str, str], VerificationRecord]:
    """(env, app) -> the verification that started last there, for every app of `envs`, in
    two round trips (`status` of 50 apps asks it once)."""
    pipe = redis.pipeline()
    for env in envs:
        pipe.hgetall(keys.last_verification(env))
    found = [
        (env, app.decode(), request_id.decode())
        for env, raw in zip(envs, pipe.execute(), strict=True)
        for app, request_id in cast(dict[bytes, bytes], raw).items()
    ]
    if not found:
        return {}
    records = cast(list[bytes | None], redis.mget([_key(r) for _env, _app, r in found]))
    return {
        (env, app): VerificationRecord.model_validate_json(raw)
        for (env, app, _request), raw in zip(found, records, strict=True)
        if raw
    }


# KEYS: record, due set, outbox stream. ARGV: request id, record json, when, length (0: no
# news). Writes the record once and queues its first news in the same step.
_START = """
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', 2592000) then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  if ARGV[4] == '0' then return 1 end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*',
             'request', ARGV[1], 'kind', 'verification', 'phase', 'started')
  return 1
end
return 0
"""

# KEYS: record, due set, outbox stream. ARGV: request id, record json, length.
# Ends the record and queues the news once, whoever gets here first.
_END = """
local old = redis.call('GET', KEYS[1])
if not old or cjson.decode(old)['ended'] then redis.call('ZREM', KEYS[2], ARGV[1]) return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*',
           'request', ARGV[1], 'kind', 'verification', 'phase', 'ended')
return 1
"""

_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
"""


def start(
    redis: Redis,
    policy: Policy,
    request: DeployRequest,
    now: float | None = None,
    announce: bool = True,
) -> VerificationRecord | None:
    """Begin verifying `request` if its environment verifies (a rollback releasegate filed
    is not verified: it would undo itself); returns the record, or None. Without `announce`
    the thread hears of it with the request's outcome (started right after the push, before
    the outcome is queued), not in a message of its own."""
    spec = policy.environments[request.env].verify
    if spec is None or request.rollback_of:
        return None
    now = time.time() if now is None else now
    apps = dict.fromkeys((c.app, c.new) for c in request.changes)
    series = [
        Series(app=app, version=version, metric=m, next_at=now)
        for app, version in apps
        for m in spec.metrics
    ]
    record = VerificationRecord(
        request=request.id,
        env=request.env,
        started=now,
        series=series,
        prometheus=spec.prometheus.url if spec.prometheus else None,
        inconclusive_limit=spec.inconclusive_limit,
        on_failure=spec.on_failure,
    )
    first = min(s.next_at for s in series)
    keys_ = (_key(request.id), DUE, report_to(request))
    length = keys.OUTBOX_MAXLEN if announce else 0
    args = (request.id, record.model_dump_json(), first, length)
    if redis.eval(_START, 3, *keys_, *args):
        redis.hset(
            keys.last_verification(request.env),
            mapping=dict.fromkeys((app for app, _version in apps), request.id),
        )
        log.info("verifying %s in %s", request.id, request.env)
    return load(redis, request.id)


def claim(redis: Redis, count: int = 10, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    ids = redis.eval(_CLAIM, 1, DUE, now, now + CLAIM, count)
    return [i.decode() if isinstance(i, bytes) else str(i) for i in cast(list[Any], ids)]


def decide(record: VerificationRecord) -> State:
    states = {s.state for s in record.series}
    if "failed" in states:
        return "failed"
    if "inconclusive" in states:
        return "inconclusive"
    return "verified" if states == {"passed"} else "verifying"


def measure_due(record: VerificationRecord, env: str, token: str | None, now: float) -> None:
    """Take every measurement that is due, all at once (each bounded in time)."""
    due = [s for s in record.series if s.state == "measuring" and s.next_at <= now]

    def one(series: Series) -> Measurement:
        return measure(series.metric, series.app, env, series.version, record.prometheus, token)

    with ThreadPoolExecutor(max(1, min(AT_ONCE, len(due))), "verify-measure") as pool:
        found = list(pool.map(one, due))
    for series, measurement in zip(due, found, strict=True):
        series.take(measurement, record.inconclusive_limit, now)
    if due:
        log.info(
            "%s in %s: %s", record.request, env, ", ".join(f"{s.metric.name} {s.last}" for s in due)
        )


def verify(
    redis: Redis,
    policy: Policy,
    request: DeployRequest,
    token: str | None,
    view: Callable[[], View],
    now: float | None = None,
) -> VerificationRecord | None:
    """One round for a claimed verification: measure what is due, decide, and once decided
    act on it and queue the news once."""
    now = time.time() if now is None else now
    record = load(redis, request.id)
    if record is None or record.ended:
        redis.zrem(DUE, request.id)
        return record
    if record.state == "verifying":
        measure_due(record, request.env, token, now)
        record.state = decide(record)
        if record.state == "verifying":
            pending = [s.next_at for s in record.series if s.state == "measuring"]
            pipe = redis.pipeline()
            pipe.set(_key(request.id), record.model_dump_json(), keepttl=True)
            pipe.zadd(DUE, {request.id: min(pending)})
            pipe.xadd(
                report_to(request),
                {
                    "request": request.id,
                    "kind": Kind.VERIFICATION.value,
                    "phase": "progress",
                },
                maxlen=keys.OUTBOX_MAXLEN,
                approximate=True,
            )
            pipe.execute()
            return record
        record.decided_at = now
        redis.set(_key(request.id), record.model_dump_json(), keepttl=True)
    _act(redis, policy, request, record, view)
    told = redis.eval(
        _END,
        3,
        _key(request.id),
        DUE,
        report_to(request),
        request.id,
        record.model_copy(update={"ended": True}).model_dump_json(),
        keys.OUTBOX_MAXLEN,
    )
    if told:
        record.ended = True
        seconds = (record.decided_at or now) - record.started
        metrics.record_verification(redis, request.env, record.state, seconds)
        if record.state == "failed":
            metrics.record_failure(redis, request.env, [c.app for c in request.changes])
        log.info("verification of %s in %s: %s", request.id, request.env, record.state)
    return record


def _act(
    redis: Redis,
    policy: Policy,
    request: DeployRequest,
    record: VerificationRecord,
    view: Callable[[], View],
) -> None:
    """What a decision does; each step is idempotent, so a re-run after a crash finishes it."""
    verdicts = Verdicts(redis)
    at = record.decided_at or time.time()
    if record.state == "verified":
        for change in request.changes:
            verdicts.ran(policy, request.env, change.app, change.new, "verified", at, request.id)
        return
    why = record.why()
    if record.state == "failed":  # the versions that failed, not a train's others
        for series in record.series:
            if series.state == "failed":
                failure = Failure(request.env, series.app, series.version, request.id, at, why)
                verdicts.mark_failed(failure)
    if record.state == "failed" and record.on_failure == "rollback":
        reason = f"verification failed: {why}"
        try:
            filed, record.left = rollbacks.file_rollback(redis, policy, view, request, reason)
            record.rollback = filed or ""
        except Exception as exc:  # no rollback could be planned: hold it instead
            log.error("cannot roll %s back: %s", request.id, exc)
            record.left = [c.app for c in request.changes]
    if not record.rollback:  # hold, inconclusive, or nothing could be rolled back
        when = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
        reason = f"verification of {request.id} {record.state}: {why}"[:300]
        Locks(redis).lock(
            Lock(request.env, "releasegate:verification", "releasegate", reason, when)
        )
        record.locked = True
    redis.set(_key(request.id), record.model_dump_json(), keepttl=True)


def verify_round(
    redis: Redis,
    policy: Callable[[], Policy],
    token: str | None,
    view: Callable[[], View],
    now: float | None = None,
    ended: Callable[[Policy, DeployRequest], None] | None = None,
) -> float:
    """One round of a worker's `verifications` loop: every due verification, then every
    automatic promotion whose soak ended; `ended` hears of each verification that ended."""
    promote_due(redis, now)
    due = claim(redis, now=now)
    if not due:
        return 1.0  # the policy is read only when there is something to measure
    store = RequestStore(redis)
    current = policy()

    def one(request_id: str) -> None:
        try:
            request = store.get(request_id)
        except UnknownRequest:
            redis.zrem(DUE, request_id)
            return
        record = verify(redis, current, request, token, view, now)
        if record is not None and record.ended and ended is not None:
            ended(current, request)

    with ThreadPoolExecutor(max(1, min(AT_ONCE, len(due))), "verify-round") as pool:
        list(pool.map(one, due))
    return 1.0


def promote_due(redis: Redis, now: float | None = None) -> int:
    """Hand each promotion whose soak ended to the bot of the environment's channel, once."""
    return len(Verdicts(redis).due_promotions(time.time() if now is None else now))
