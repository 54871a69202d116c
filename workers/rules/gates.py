"""Release gates that both the chat and the worker check: locks, windows, expiry, prereleases,
promotion order.

The chat checks them when a request is made or approved; the worker checks
locks, windows and expiry again right before it commits, because time
passes and people lock environments while jobs wait in the queue.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from redis import Redis

from config.environments import SEMVER
from config.errors import Refused
from config.gates import Freeze
from config.policy import Policy
from config.text import inert
from config.windows import next_opening, open_now
from workers.state import keys
from workers.state.request import DeployRequest


@dataclass(frozen=True)
class Lock:
    env: str
    owner: str
    owner_name: str
    reason: str
    since: str  # ISO 8601

    def describe(self) -> str:
        why = f": {inert(self.reason, 200)}" if self.reason else ""
        return f"{self.env} is locked by {self.owner_name} since {_utc_minute(self.since)}{why}"


def _utc_minute(iso: str) -> str:
    """`2026-11-24 10:00 UTC`: to the minute, with its zone (people read it across zones)."""
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return iso[:16]
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class Locks:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def lock(self, lock: Lock) -> Lock | None:
        """Take the lock; returns the lock already held instead, if there is one."""
        if self.redis.set(keys.lock(lock.env), json.dumps(asdict(lock)), nx=True):
            return None
        return self.get(lock.env)

    def unlock(self, env: str) -> Lock | None:
        held = self.get(env)
        self.redis.delete(keys.lock(env))
        return held

    def get(self, env: str) -> Lock | None:
        raw = self.redis.get(keys.lock(env))
        return Lock(**json.loads(raw)) if raw else None


def check_unlocked(locks: Locks, env: str, holder: str | None = None) -> None:
    """Refuse while `env` is locked, unless `holder` (whose request it is) holds the lock:
    "lock, then roll back" is the incident flow, and the lock keeps everyone else out."""
    held = locks.get(env)
    if held is not None and held.owner != holder:
        raise Refused(
            f"{held.describe()}; until it is unlocked only {held.owner_name} may deploy there",
            reason="locked",
        )


def check_window(policy: Policy, env: str, now: datetime) -> None:
    windows = policy.environments[env].parsed_windows
    if open_now(windows, now):
        return
    opening = next_opening(windows, now)
    when = f"; it opens {opening.strftime('%a %Y-%m-%d %H:%M %Z')}" if opening else ""
    allowed = ", ".join(w.text for w in windows)
    raise Refused(f"{env} is outside its deploy windows ({allowed}){when}", reason="window")


def active_freeze(policy: Policy, env: str, now: datetime) -> Freeze | None:
    """The freeze of `env` that covers `now`, if any (the one ending last)."""
    covering = [f for f in policy.environments[env].freezes if f.covers(now)]
    return max(covering, key=lambda f: f.end, default=None)


def upcoming_freezes(policy: Policy, env: str, now: datetime) -> list[Freeze]:
    """The freezes of `env` that have not ended, soonest first."""
    return sorted(
        (f for f in policy.environments[env].freezes if f.end > now), key=lambda f: f.start
    )


def check_freeze(policy: Policy, env: str, now: datetime) -> None:
    if (freeze := active_freeze(policy, env, now)) is not None:
        why = f" for {inert(freeze.reason, 120)}" if freeze.reason else ""
        raise Refused(
            f"{env} is frozen{why} until {freeze.ends} {freeze.tz}; nothing deploys there "
            "until then (break-glass aside)",
            reason="freeze",
        )


def check_not_expired(request: DeployRequest, now: datetime) -> None:
    if request.expires_at is not None and now >= request.expires_at:
        raise Refused(
            f"{request.id} expired at {request.expires_at.isoformat(timespec='minutes')}; "
            "ask again with a new request",
            reason="expired",
        )


def check_open(
    policy: Policy, locks: Locks, env: str, now: datetime, holder: str | None = None
) -> None:
    """Locks, freezes and windows: what closes an environment to every request (but a lock's
    own holder's: `holder` is whose request it is)."""
    check_unlocked(locks, env, holder)
    check_freeze(policy, env, now)
    check_window(policy, env, now)


def prerelease(version: str) -> str | None:
    """The prerelease part of a version (`rc1` in `2.1.1-rc1`, `v2.1.1-rc1`), if any."""
    match = SEMVER.fullmatch(version.removeprefix("v"))
    if match is not None:
        return match.group(4)
    return version.split("-", 1)[1] if "-" in version else None


def final_version(version: str) -> str:
    """`2.1.1` for `2.1.1-rc1` (keeping any `v`); unchanged for a final version."""
    return version.split("-", 1)[0] if prerelease(version) else version


def check_prerelease(policy: Policy, env: str, version: str) -> None:
    if not policy.environments[env].prereleases and prerelease(version):
        raise Refused(f"{env} takes no prereleases; {version} is one", reason="prerelease")


def ran_upstream(version: str, upstream_versions: list[str]) -> bool:
    """True when the upstream ran `version`, or a release candidate of it if it is final."""
    if version in upstream_versions:
        return True
    if prerelease(version):
        return False
    candidate = re.compile(re.escape(version) + r"-rc[.\-]?\d*")
    return any(candidate.fullmatch(v) for v in upstream_versions)
