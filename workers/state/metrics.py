"""Prometheus metrics.

The bot counts what it sees in process (requests, refusals, approvals). What
workers do happens in other processes (several workers, on other pods), so they count in Redis and
the bot's `/metrics` reads those counts at scrape time: the deploy counters,
the duration histogram, push retries and the queue depth are cluster-wide
and the same on every bot replica (aggregate them with `max`, not `sum`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis import Redis

from workers.state import keys

REQUESTS = Counter("releasegate_chat_requests", "Chat commands received", ["platform", "verb"])
REFUSALS = Counter("releasegate_refusals", "Chat commands refused", ["reason"])
APPROVALS = Counter("releasegate_approvals", "Approvals counted")

DURATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
_DEPLOYS = keys.METRICS_DEPLOYS
_DURATION = keys.METRICS_DURATION
_RETRIES = keys.METRICS_PUSH_RETRIES
_ROLLOUTS = keys.METRICS_ROLLOUTS
_ROLLOUT_DURATION = keys.METRICS_ROLLOUT_DURATION
_VERIFICATIONS = keys.METRICS_VERIFICATIONS
_VERIFICATION_DURATION = keys.METRICS_VERIFICATION_DURATION


def _record(
    redis: Redis, counts: str, durations: str, env: str, outcome: str, seconds: float | None
) -> None:
    pipe = redis.pipeline()
    pipe.hincrby(counts, f"{env}|{outcome}", 1)
    if seconds is not None:
        for bound in DURATION_BUCKETS:
            if seconds <= bound:
                pipe.hincrby(durations, str(bound), 1)
        pipe.hincrby(durations, "+Inf", 1)
        pipe.hincrbyfloat(durations, "sum", seconds)
    pipe.execute()


def record_deploy(redis: Redis, env: str, outcome: str, seconds: float | None) -> None:
    """Count a finished deploy; `seconds` from request to push, for pushed ones."""
    _record(redis, _DEPLOYS, _DURATION, env, outcome, seconds)


def record_rollout(redis: Redis, env: str, outcome: str, seconds: float | None) -> None:
    """Count a followed rollout (healthy, degraded, timeout, error); `seconds` from the push
    to healthy, for healthy ones."""
    _record(redis, _ROLLOUTS, _ROLLOUT_DURATION, env, outcome, seconds)


def record_verification(redis: Redis, env: str, result: str, seconds: float) -> None:
    """Count a verification's end (verified, failed, inconclusive); `seconds` from its start
    to the decision."""
    _record(redis, _VERIFICATIONS, _VERIFICATION_DURATION, env, result, seconds)


LEAD_BUCKETS = (300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 7 * 86400.0, 30 * 86400.0)


def _labelled(pipe: Any, key: str, labels: str, seconds: float) -> None:
    """One observation of a histogram kept per label set (`env|app`) in one hash."""
    for bound in LEAD_BUCKETS:
        if seconds <= bound:
            pipe.hincrby(key, f"{labels}|{bound}", 1)
    pipe.hincrby(key, f"{labels}|+Inf", 1)
    pipe.hincrbyfloat(key, f"{labels}|sum", seconds)


def record_delivery(
    redis: Redis, env: str, apps: list[str], lead_seconds: float | None, rollback: bool
) -> None:
    """A landed request, for the delivery figures: a deploy of each app with its lead time
    (from filing to landing), or, for a rollback a person asked for, a change failure each."""
    pipe = redis.pipeline()
    for app in apps:
        if rollback:
            pipe.hincrby(keys.METRICS_DELIVERY_FAILURES, f"{env}|{app}", 1)
            continue
        pipe.hincrby(keys.METRICS_DELIVERY_DEPLOYS, f"{env}|{app}", 1)
        if lead_seconds is not None:
            _labelled(pipe, keys.METRICS_DELIVERY_LEAD_TIME, f"{env}|{app}", lead_seconds)
    pipe.execute()


def record_failure(redis: Redis, env: str, apps: list[str]) -> None:
    """A deploy whose verification failed: a change failure of each app."""
    pipe = redis.pipeline()
    for app in apps:
        pipe.hincrby(keys.METRICS_DELIVERY_FAILURES, f"{env}|{app}", 1)
    pipe.execute()


def record_restore(redis: Redis, env: str, apps: list[str], seconds: float) -> None:
    """Service restored after a failed deploy (its rollback landed) `seconds` after it."""
    pipe = redis.pipeline()
    for app in apps:
        _labelled(pipe, keys.METRICS_DELIVERY_RESTORE, f"{env}|{app}", seconds)
    pipe.execute()


def record_approval_wait(redis: Redis, env: str, seconds: float) -> None:
    """A request reached its approvals `seconds` after it was filed."""
    pipe = redis.pipeline()
    _labelled(pipe, keys.METRICS_APPROVAL_WAIT, env, seconds)
    pipe.execute()


def record_push_retry(redis: Redis) -> None:
    redis.incr(_RETRIES)


def _decoded(raw: Any) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in cast(dict[bytes, bytes], raw).items()}


class RedisCollector(Collector):
    """Exposes the workers' counts kept in Redis, and the queue depth."""

    def __init__(self, redis: Redis, queue_length: Any) -> None:
        self.redis = redis
        self.queue_length = queue_length

    def _by_env(
        self, key: str, name: str, documentation: str, label: str = "outcome"
    ) -> CounterMetricFamily:
        family = CounterMetricFamily(name, documentation, labels=["env", label])
        for field, value in _decoded(self.redis.hgetall(key)).items():
            env, outcome = field.split("|", 1)
            family.add_metric([env, outcome], float(value))
        return family

    def _histogram(self, key: str, name: str, documentation: str) -> HistogramMetricFamily:
        raw = _decoded(self.redis.hgetall(key))
        buckets = [(str(b), float(raw.get(str(b), 0))) for b in DURATION_BUCKETS]
        buckets.append(("+Inf", float(raw.get("+Inf", 0))))
        return HistogramMetricFamily(
            name, documentation, buckets=buckets, sum_value=float(raw.get("sum", 0))
        )

    def _by_env_app(self, key: str, name: str, documentation: str) -> CounterMetricFamily:
        family = CounterMetricFamily(name, documentation, labels=["env", "app"])
        for field, value in _decoded(self.redis.hgetall(key)).items():
            env, _, app = field.partition("|")
            family.add_metric([env, app], float(value))
        return family

    def _labelled_histogram(
        self, key: str, name: str, documentation: str, labels: list[str]
    ) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=labels)
        series: dict[tuple[str, ...], dict[str, float]] = {}
        for field, value in _decoded(self.redis.hgetall(key)).items():
            named, _, part = field.rpartition("|")
            if named.count("|") == len(labels) - 1:
                series.setdefault(tuple(named.split("|")), {})[part] = float(value)
        for label_values, raw in sorted(series.items()):
            buckets = [(str(b), raw.get(str(b), 0.0)) for b in LEAD_BUCKETS]
            buckets.append(("+Inf", raw.get("+Inf", 0.0)))
            family.add_metric(list(label_values), buckets, raw.get("sum", 0.0))
        return family

    def _pending(self) -> GaugeMetricFamily:
        gauge = GaugeMetricFamily(
            "releasegate_pending_requests", "Requests waiting for approval", labels=["env"]
        )
        pipe = self.redis.pipeline()
        for request_id in cast(list[bytes], self.redis.zrange(keys.PENDING, 0, -1)):
            pipe.hget(keys.request(request_id.decode()), "spec")
        counts: dict[str, int] = {}
        for spec in pipe.execute():
            if spec:
                env = str(json.loads(spec).get("env", ""))
                counts[env] = counts.get(env, 0) + 1
        for env, count in sorted(counts.items()):
            gauge.add_metric([env], float(count))
        return gauge

    def _delivery(self) -> Iterator[Any]:
        yield self._by_env_app(
            keys.METRICS_DELIVERY_DEPLOYS,
            "releasegate_delivery_deploys",
            "Deploys landed (rollbacks not counted)",
        )
        yield self._by_env_app(
            keys.METRICS_DELIVERY_FAILURES,
            "releasegate_delivery_change_failures",
            "Deploys that failed verification or were rolled back by a person",
        )
        yield self._labelled_histogram(
            keys.METRICS_DELIVERY_LEAD_TIME,
            "releasegate_delivery_lead_time_seconds",
            "Seconds from filing a request to its landing",
            ["env", "app"],
        )
        yield self._labelled_histogram(
            keys.METRICS_DELIVERY_RESTORE,
            "releasegate_delivery_time_to_restore_seconds",
            "Seconds from a failed deploy landing to its rollback landing",
            ["env", "app"],
        )
        yield self._labelled_histogram(
            keys.METRICS_APPROVAL_WAIT,
            "releasegate_approval_wait_seconds",
            "Seconds from filing a request to its last needed approval",
            ["env"],
        )
        yield self._pending()

    def collect(self) -> Iterator[Any]:
        yield from self._delivery()
        yield self._by_env(_DEPLOYS, "releasegate_deploys", "Deploys finished by workers")
        yield self._histogram(
            _DURATION, "releasegate_deploy_duration_seconds", "Seconds from request to push"
        )
        yield self._by_env(_ROLLOUTS, "releasegate_rollouts", "Rollouts followed to their end")
        rollout_seconds = "Seconds from the push to the reconciler's Synced and Healthy"
        yield self._histogram(
            _ROLLOUT_DURATION, "releasegate_rollout_duration_seconds", rollout_seconds
        )
        yield self._by_env(
            _VERIFICATIONS, "releasegate_verifications", "Verifications ended", label="result"
        )
        yield self._histogram(
            _VERIFICATION_DURATION,
            "releasegate_verification_duration_seconds",
            "Seconds from a verification's start to its decision",
        )
        retries = CounterMetricFamily("releasegate_push_retries", "Pushes retried after a race")
        retries.add_metric([], float(cast(bytes | None, self.redis.get(_RETRIES)) or 0))
        yield retries
        depth = GaugeMetricFamily("releasegate_queue_depth", "Deploy jobs waiting for a worker")
        depth.add_metric([], float(self.queue_length()))
        yield depth
        unreviewed = GaugeMetricFamily(
            "releasegate_break_glass_unreviewed", "Break-glass deploys nobody has reviewed yet"
        )
        unreviewed.add_metric([], float(self.redis.zcard(keys.BREAK_GLASS_UNREVIEWED)))
        yield unreviewed
