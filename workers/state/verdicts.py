"""What verification concluded, kept in Redis: versions that failed in an environment, and
since when each environment runs each app's version with which evidence (the soak clock).

A failed version is refused in its environment and downstream until a person clears it.
The soak clock of `app` in `env` restarts whenever another version lands there; it moves
forward when the same version gets stronger evidence (pushed, then healthy, then verified),
since soak counts from the evidence the environment asks for.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal, cast

from redis import Redis

from config.policy import Policy
from workers.state import keys
from workers.state.request import Built

Evidence = Literal["pushed", "healthy", "verified"]
STRENGTH: dict[str, int] = {"pushed": 0, "healthy": 1, "verified": 2}

# KEYS: the promotions due. ARGV: now, the outbox streams' prefix, their length.
# Hands each due promotion to its channel's outbox once, in the step that takes it.
_DUE = """
local out = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 20)) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local due = cjson.decode(member)
    local platform = string.match(due['channel'], '^([^:]+):')
    redis.call('XADD', ARGV[2] .. platform, 'MAXLEN', '~', ARGV[3], '*', 'request', '',
               'kind', 'promote', 'env', due['env'], 'app', due['app'],
               'version', due['version'], 'channel', due['channel'])
    table.insert(out, member)
  end
end
return out
"""


@dataclass(frozen=True)
class Failure:
    env: str
    app: str
    version: str
    request: str
    at: float  # Unix seconds
    why: str  # the values that decided it: "error-rate 0.21 ≥ 0.05"


@dataclass(frozen=True)
class Running:
    version: str
    since: float  # Unix seconds: when `evidence` was reached for this version
    evidence: Evidence
    request: str = ""
    landed: float = 0.0  # Unix seconds: when this version was pushed there


def needed(policy: Policy, env: str) -> Evidence:
    """The evidence that counts for `env`'s soak: verified where it verifies, else healthy
    where its rollout is followed, else pushed."""
    spec = policy.environments[env]
    return "verified" if spec.verify else "healthy" if spec.rollout else "pushed"


def upstreams(policy: Policy, env: str) -> list[str]:
    """`env` and every environment it is promoted from, nearest first."""
    chain = [env]
    while (up := policy.environments[chain[-1]].promote_from) and up not in chain:
        chain.append(up)
    return chain


class Verdicts:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    # Failed versions.

    def mark_failed(self, failure: Failure) -> None:
        field = f"{failure.app} {failure.version}"
        self.redis.hset(keys.failed(failure.env), field, json.dumps(asdict(failure)))

    def failure(self, policy: Policy, env: str, app: str, version: str) -> Failure | None:
        """Where `app` `version` failed verification in `env` or upstream of it, if it did."""
        for where in upstreams(policy, env):
            raw = cast(bytes | None, self.redis.hget(keys.failed(where), f"{app} {version}"))
            if raw is not None:
                return Failure(**json.loads(raw))
        return None

    def failures(self, env: str) -> list[Failure]:
        raw = cast(dict[bytes, bytes], self.redis.hgetall(keys.failed(env)))
        return sorted((Failure(**json.loads(v)) for v in raw.values()), key=lambda f: f.at)

    def clear(self, env: str, app: str, version: str) -> Failure | None:
        """Forget that `app` `version` failed in `env`; returns what was forgotten."""
        field = f"{app} {version}"
        pipe = self.redis.pipeline()
        pipe.hget(keys.failed(env), field)
        pipe.hdel(keys.failed(env), field)
        raw, _ = pipe.execute()
        return Failure(**json.loads(raw)) if raw else None

    # The soak clock.

    def running(self, env: str, app: str) -> Running | None:
        raw = cast(bytes | None, self.redis.hget(keys.running(env), app))
        return Running(**json.loads(raw)) if raw else None

    def ran(
        self,
        policy: Policy,
        env: str,
        app: str,
        version: str,
        evidence: Evidence,
        at: float,
        request: str = "",
    ) -> None:
        """Note that `env` runs `app` `version` with `evidence` since `at`. A push of another
        version restarts the clock; stronger evidence for the same version moves it to `at`.
        Where the evidence is what `env`'s soak counts, downstream `auto_promote`
        environments get their promotion scheduled."""
        if env not in policy.environments:
            return  # the policy no longer names it: nothing downstream to schedule
        now = self.running(env, app)
        if evidence == "pushed":
            if now is not None and now.version == version:
                return  # landed again (a re-run): the version ran all along
        elif now is None or now.version != version or STRENGTH[evidence] <= STRENGTH[now.evidence]:
            return  # evidence for a version that no longer runs there, or nothing new
        landed = at if evidence == "pushed" or now is None else now.landed
        record = Running(version, at, evidence, request, landed)
        self.redis.hset(keys.running(env), app, json.dumps(asdict(record)))
        if STRENGTH[evidence] < STRENGTH[needed(policy, env)]:
            return
        for name, spec in policy.environments.items():
            pinned = app in policy.apps and name in policy.apps[app].pins
            if spec.promote_from == env and spec.auto_promote and spec.soak and pinned:
                due = {"env": name, "app": app, "version": version, "since": at}
                member = json.dumps({**due, "channel": spec.channels[0]})
                self.redis.zadd(keys.PROMOTIONS_DUE, {member: at + spec.soak.total_seconds()})

    # The artifacts that landed (what a rollback restores, for its records).

    def saw(self, env: str, artifacts: tuple[Built, ...]) -> None:
        if artifacts:
            mapping: dict[str | bytes, str | bytes] = {
                f"{b.app} {b.tag}": b.model_dump_json() for b in artifacts
            }
            self.redis.hset(keys.artifacts_landed(env), mapping=mapping)  # type: ignore[arg-type]

    def artifact(self, env: str, app: str, version: str) -> Built | None:
        raw = cast(bytes | None, self.redis.hget(keys.artifacts_landed(env), f"{app} {version}"))
        return Built.model_validate_json(raw) if raw else None

    def due_promotions(self, now: float) -> list[dict[str, str | float]]:
        """The automatic promotions whose soak ended by `now`, each queued for its channel's
        bot once (an outbox entry of kind `promote`)."""
        prefix = keys.outbox("")
        members = self.redis.eval(_DUE, 1, keys.PROMOTIONS_DUE, now, prefix, keys.OUTBOX_MAXLEN)
        return [json.loads(m) for m in cast(list[bytes], members)]
