"""Requests, approvals and outcomes in Redis, with every state change atomic.

A request's immutable part is written once (`HSETNX spec`); its state moves
only through compare-and-set scripts, so two people approving at the same
moment cannot both enqueue, and a late approval cannot revive a finished
request.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from redis import Redis

from config.errors import UnknownRequest
from workers.state import keys
from workers.state.durability import Durability
from workers.state.request import Approval, DeployRequest, RequestState, Result

log = logging.getLogger(__name__)

MESSAGE_TTL = 30 * 24 * 3600  # reactions on a request's card count for a month
DELIVERY_TTL = 24 * 3600  # platforms retry deliveries within minutes; keep ids a day
RETENTION = timedelta(days=30)


# Every state change also records when it happened (`since`, the server's clock) and
# keeps the set of requests a worker still owes an outcome (approved or running).
_APPROVE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'unknown', '0'} end
if state ~= 'pending' then return {'not_pending', state} end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[5]) == 0 then
  return {'duplicate', tostring(redis.call('HLEN', KEYS[2]))}
end
local count = redis.call('HLEN', KEYS[2])
if count >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'state', 'approved', 'since', redis.call('TIME')[1])
  redis.call('SADD', KEYS[3], ARGV[3])
  local spec = redis.call('HGET', KEYS[1], 'spec')
  redis.call('ZREM', ARGV[4] .. cjson.decode(spec)['channel'], ARGV[3])
  redis.call('ZREM', KEYS[4], ARGV[3])
  return {'quorum', tostring(count)}
end
return {'counted', tostring(count)}
"""

# KEYS: request hash, approvals hash, active set, pending index, unreported set. ARGV:
# request id, new state, result json ('' for none), seconds to keep a request that ends
# ('' when it does not), the outbox stream to tell the request's channel through ('' for
# none), the per-channel pending key prefix, the outbox's length, allowed old states...
# The outbox entry is written in the same script as the state it reports, so no crash
# can leave a request ended and its channel never told, or told of an end that did not
# happen.
_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
for i = 8, #ARGV do
  if state == ARGV[i] then
    redis.call('HSET', KEYS[1], 'state', ARGV[2], 'since', redis.call('TIME')[1])
    if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[3]) end
    if ARGV[2] == 'approved' or ARGV[2] == 'running' then
      redis.call('SADD', KEYS[3], ARGV[1])
    else
      redis.call('SREM', KEYS[3], ARGV[1])
    end
    if ARGV[2] ~= 'pending' then
      local spec = redis.call('HGET', KEYS[1], 'spec')
      redis.call('ZREM', ARGV[6] .. cjson.decode(spec)['channel'], ARGV[1])
      redis.call('ZREM', KEYS[4], ARGV[1])
    end
    if ARGV[4] ~= '' then  -- a final state: the request is kept for the retention period
      redis.call('EXPIRE', KEYS[1], ARGV[4])
      redis.call('EXPIRE', KEYS[2], ARGV[4])
    end
    if ARGV[5] ~= '' then
      redis.call('SADD', KEYS[5], ARGV[1])
      redis.call('XADD', ARGV[5], 'MAXLEN', '~', ARGV[7], '*',
                 'request', ARGV[1], 'kind', 'outcome')
    end
    return state
  end
end
return false
"""


# KEYS: request hash, approvals hash. ARGV: identity, principal. Only the same id takes
# back an approval (a person's reaction on one platform cannot undo one made on another).
_WITHDRAW = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
local given = redis.call('HGET', KEYS[2], ARGV[1])
if not given or cjson.decode(given)['principal'] ~= ARGV[2] then return 0 end
return redis.call('HDEL', KEYS[2], ARGV[1])
"""


@dataclass(frozen=True)
class ApprovalOutcome:
    status: str  # quorum | counted | duplicate | not_pending | unknown
    count: int
    state: RequestState | None = None


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class RequestStore:
    def __init__(
        self, redis: Redis, retention: timedelta = RETENTION, durable: bool = False
    ) -> None:
        self.redis = redis
        self.retention = int(retention.total_seconds())  # how long ended requests are kept
        # Wait for a replica after every transition (the workers' store; the bot waits once
        # per command, before it answers, and tells the person when none confirmed).
        self.durability = Durability(redis) if durable else None
        self._approve = redis.register_script(_APPROVE)
        self._transition = redis.register_script(_TRANSITION)
        self._withdraw = redis.register_script(_WITHDRAW)

    def create(self, request: DeployRequest, state: RequestState) -> bool:
        """Store a new request; False when the id is already taken."""
        key = keys.request(request.id)
        if not self.redis.hsetnx(key, "spec", request.model_dump_json()):
            return False
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping={"state": state.value, "since": int(request.created_at.timestamp())})
        if state is RequestState.APPROVED:
            pipe.sadd(keys.ACTIVE, request.id)
        if state is RequestState.PENDING:
            score = {request.id: request.created_at.timestamp()}
            pipe.zadd(keys.pending_in(request.channel), score)
            pipe.zadd(keys.PENDING, score)
        pipe.execute()
        return True

    def get(self, request_id: str) -> DeployRequest:
        raw = _text(self.redis.hget(keys.request(request_id), "spec"))
        if raw is None:
            raise UnknownRequest(f"there is no request {request_id}")
        return DeployRequest.model_validate_json(raw)

    def open_requests(self) -> list[tuple[DeployRequest, RequestState]]:
        """Every request still waiting, approved or running, read in one round trip."""
        ids = [*self.pending_all(), *self.active()]
        pipe = self.redis.pipeline()
        for request_id in ids:
            pipe.hmget(keys.request(request_id), "spec", "state")
        found = []
        for spec, state in cast(list[list[Any]], pipe.execute()):
            if spec is not None and state is not None:
                found.append(
                    (
                        DeployRequest.model_validate_json(_text(spec) or ""),
                        RequestState(str(_text(state))),
                    )
                )
        return found

    def exists(self, request_id: str) -> bool:
        return bool(self.redis.exists(keys.request(request_id)))

    def state(self, request_id: str) -> RequestState:
        raw = _text(self.redis.hget(keys.request(request_id), "state"))
        if raw is None:
            raise UnknownRequest(f"there is no request {request_id}")
        return RequestState(raw)

    def result(self, request_id: str) -> Result | None:
        raw = _text(self.redis.hget(keys.request(request_id), "result"))
        return Result.model_validate_json(raw) if raw else None

    def approval_records(self, request_id: str) -> list[Approval]:
        """Who approved (one entry per person), as which id, in which platform groups."""
        raw = cast(dict[Any, Any], self.redis.hgetall(keys.approvals(request_id)))
        records = [Approval.from_json(str(_text(k)), str(_text(v))) for k, v in raw.items()]
        return sorted(records, key=lambda a: a.principal)

    def approvals(self, request_id: str) -> list[str]:
        """The principals that approved, for trailers and cards."""
        return [a.principal for a in self.approval_records(request_id)]

    def approve(self, request_id: str, approval: Approval, needed: int) -> ApprovalOutcome:
        """Count `approval` (once per identity); the request is approved at `needed`."""
        status, detail = self._approve(
            keys=[keys.request(request_id), keys.approvals(request_id), keys.ACTIVE, keys.PENDING],
            args=[approval.identity, needed, request_id, keys.PENDING_IN, approval.to_json()],
        )
        status, detail = str(_text(status)), str(_text(detail))
        if status == "not_pending":
            return ApprovalOutcome(status, 0, RequestState(detail))
        return ApprovalOutcome(status, int(detail))

    def active(self) -> list[str]:
        """Requests approved or running: a worker still owes them an outcome."""
        return sorted(str(_text(m)) for m in cast(set[Any], self.redis.smembers(keys.ACTIVE)))

    def ready(self, limit: int) -> list[str]:
        """Requests approved or running, longest waiting first: what a push lane lands next."""
        ids = self.active()
        pipe = self.redis.pipeline()
        for request_id in ids:
            pipe.hmget(keys.request(request_id), "state", "since", "not_before")
        rows = cast(list[list[Any]], pipe.execute())
        now = time.time()
        waiting = sorted(
            (int(_text(since) or 0), request_id)
            for request_id, (state, since, not_before) in zip(ids, rows, strict=True)
            if _text(state) in (RequestState.APPROVED.value, RequestState.RUNNING.value)
            and float(_text(not_before) or 0) <= now
        )
        return [request_id for _since, request_id in waiting[:limit]]

    # A request whose merge the forge refused for now waits, and is tried again after this.
    def wait_until(self, request_id: str, when: float, why: str) -> bool:
        """Note the retry time and the forge's reason; True when the reason is new (to say it)."""
        key = keys.request(request_id)
        old = _text(self.redis.hget(key, "waiting_for"))
        self.redis.hset(key, mapping={"not_before": when, "waiting_for": why})
        return old != why

    def not_before(self, request_id: str) -> float:
        return float(_text(self.redis.hget(keys.request(request_id), "not_before")) or 0)

    # The request's pull (merge) request on the forge, once opened: {"number", "url", "branch"}.
    def set_merge_request(self, request_id: str, info: dict[str, Any]) -> None:
        self.redis.hset(keys.request(request_id), "merge_request", json.dumps(info))

    def merge_request(self, request_id: str) -> dict[str, Any] | None:
        raw = _text(self.redis.hget(keys.request(request_id), "merge_request"))
        return dict(json.loads(raw)) if raw else None

    def mark_pushing(self, request_ids: Iterable[str]) -> None:
        """Note, before a push, that these requests' commits may reach the branch from now on."""
        pipe = self.redis.pipeline()
        for request_id in request_ids:
            pipe.hset(keys.request(request_id), "pushing", 1)
        pipe.execute()

    def was_pushing(self, request_id: str) -> bool:
        return bool(self.redis.hexists(keys.request(request_id), "pushing"))

    def state_since(self, request_id: str) -> int:
        """When the request entered its current state (Unix seconds, Redis's clock)."""
        return int(_text(self.redis.hget(keys.request(request_id), "since")) or 0)

    def withdraw(self, request_id: str, identity: str, principal: str) -> bool:
        """Take back an approval while the request is still pending; True if one was taken."""
        names = [keys.request(request_id), keys.approvals(request_id)]
        return bool(self._withdraw(keys=names, args=[identity, principal]))

    def transition(
        self,
        request_id: str,
        allowed: Iterable[RequestState],
        to: RequestState,
        result: Result | None = None,
        report_to: str | None = None,
    ) -> RequestState | None:
        """Move to `to` if the current state is one of `allowed`; return the old state or None.
        With `report_to` (an outbox stream), the move also queues the news for the channel."""
        old = self._transition(
            keys=[
                keys.request(request_id),
                keys.approvals(request_id),
                keys.ACTIVE,
                keys.PENDING,
                keys.UNREPORTED,
            ],
            args=[
                request_id,
                to.value,
                result.model_dump_json() if result else "",
                self.retention if to.final else "",
                report_to or "",
                keys.PENDING_IN,
                keys.OUTBOX_MAXLEN,
                *(s.value for s in allowed),
            ],
        )
        if old is None:
            return None
        if self.durability is not None:
            self.durability.confirmed()  # logs when no replica confirmed in time
        return RequestState(str(_text(old)))

    def finish(
        self,
        request_id: str,
        allowed: Iterable[RequestState],
        result: Result,
        report_to: str | None = None,
    ) -> bool:
        """End the request if it is in one of `allowed`; see `transition` for `report_to`."""
        return self.transition(request_id, allowed, result.state, result, report_to) is not None

    def pending_all(self) -> list[str]:
        """Every pending request, oldest first (an index, never a scan of the keyspace)."""
        return [str(_text(m)) for m in cast(list[Any], self.redis.zrange(keys.PENDING, 0, -1))]

    def pending_in(self, channel: str) -> list[str]:
        members = cast(list[Any], self.redis.zrange(keys.pending_in(channel), 0, -1))
        return [str(_text(m)) for m in members]

    # Break-glass deploys waiting for an approver's review, by when the review is due.
    def await_review(self, request_id: str, due: float) -> None:
        self.redis.zadd(keys.BREAK_GLASS_UNREVIEWED, {request_id: due})

    def unreviewed(self, due_by: float | None = None) -> list[str]:
        """The break-glass deploys nobody has reviewed (only those due by `due_by`)."""
        top = "+inf" if due_by is None else due_by
        found = self.redis.zrangebyscore(keys.BREAK_GLASS_UNREVIEWED, "-inf", top)
        return [str(_text(m)) for m in cast(list[Any], found)]

    def is_unreviewed(self, request_id: str) -> bool:
        return self.redis.zscore(keys.BREAK_GLASS_UNREVIEWED, request_id) is not None

    def mark_reviewed(self, request_id: str, by: str) -> bool:
        """Record the review; False when someone reviewed it first."""
        if not self.redis.zrem(keys.BREAK_GLASS_UNREVIEWED, request_id):
            return False
        self.redis.hset(keys.request(request_id), "reviewed_by", by)
        return True

    def first_reminder(self, request_id: str) -> bool:
        """True once per request: its overdue review is reminded a single time."""
        return bool(self.redis.hsetnx(keys.request(request_id), "reminded", 1))

    # The message that shows a request on its platform (its card), both ways.
    def bind_message(self, request_id: str, channel: str, ts: str) -> None:
        pipe = self.redis.pipeline()
        pipe.hset(keys.request(request_id), "message", ts)
        pipe.set(keys.message(channel, ts), request_id, ex=MESSAGE_TTL)
        pipe.execute()

    def message_of(self, request_id: str) -> str | None:
        return _text(self.redis.hget(keys.request(request_id), "message"))

    def request_for_message(self, channel: str, ts: str) -> str | None:
        return _text(self.redis.get(keys.message(channel, ts)))

    def first_delivery(self, kind: str, delivery_id: str) -> bool:
        """True the first time a platform delivers this event; False for its retries."""
        key = keys.seen(kind, delivery_id)
        return bool(self.redis.set(key, 1, nx=True, ex=DELIVERY_TTL))

    # Reporting: an outcome that could not be posted stays listed until it is.
    def mark_unreported(self, request_id: str) -> None:
        self.redis.sadd(keys.UNREPORTED, request_id)

    def mark_reported(self, request_id: str) -> None:
        self.redis.srem(keys.UNREPORTED, request_id)
        self.redis.hset(keys.request(request_id), "reported", datetime.now(UTC).isoformat())

    def is_unreported(self, request_id: str) -> bool:
        return bool(self.redis.sismember(keys.UNREPORTED, request_id))

    def unreported(self) -> list[str]:
        return sorted(str(_text(m)) for m in self.redis.smembers(keys.UNREPORTED))
