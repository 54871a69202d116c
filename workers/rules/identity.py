"""Who is who under one policy: lists expanded, Rocket.Chat names resolved, people counted once.

The bot and the worker both decide with this: the bot when someone asks or
approves, the worker again right before it commits, each against the policy
it has loaded then. A Rocket.Chat principal may name a user by id or by
username; the bot resolves names to ids through Rocket.Chat's API and keeps
the result in Redis (`ROCKETCHAT_IDS`), so the worker, which holds no chat
token, compares the same ids. A name that did not resolve matches nobody.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from redis import Redis

from config.policy import Policy
from config.principals import Principal
from workers.state.keys import ROCKETCHAT_IDS, SLACK_GROUPS
from workers.state.request import Approval

# How old the bot's reading of a Slack user group may be when a worker counts on it.
GROUPS_FRESH = 60.0


def load_rocketchat_ids(redis: Redis) -> dict[str, str]:
    raw = cast(dict[Any, Any], redis.hgetall(ROCKETCHAT_IDS))
    return {_text(k): _text(v) for k, v in raw.items()}


def save_rocketchat_ids(redis: Redis, ids: Mapping[str, str]) -> None:
    if ids:
        redis.hset(ROCKETCHAT_IDS, mapping=cast(Any, dict(ids)))


def save_slack_group(redis: Redis, group: str, members: Iterable[str], now: float) -> None:
    """The bot's reading of a Slack user group (workers hold no Slack token)."""
    redis.hset(SLACK_GROUPS, group, json.dumps({"members": sorted(members), "at": now}))


def slack_groups_now(
    redis: Redis, now: float, fresh: float = GROUPS_FRESH
) -> dict[str, frozenset[str]]:
    """Slack user group -> members, for the groups the bot read in the last `fresh` seconds
    (an older reading confirms nobody)."""
    found: dict[str, frozenset[str]] = {}
    for group, raw in cast(dict[Any, Any], redis.hgetall(SLACK_GROUPS)).items():
        reading = json.loads(raw)
        if now - float(reading.get("at", 0)) <= fresh:
            found[_text(group)] = frozenset(str(m) for m in reading.get("members", []))
    return found


def slack_groups_of(policy: Policy) -> list[str]:
    """Every Slack user group (`S…`) the policy names."""
    entries = [
        *(p for members in policy.groups.values() for p in members),
        *(p for env in policy.environments.values() for p in env.deployers),
        *(p for env in policy.environments.values() for p in env.approvers),
    ]
    return sorted({e.removeprefix("slack-group:") for e in entries if e.startswith("slack-group:")})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def rocketchat_names(policy: Policy) -> list[str]:
    """Every Rocket.Chat user the policy names (by id or username), to resolve."""
    entries = [
        *(p for ids in policy.people.values() for p in ids),
        *(p for members in policy.groups.values() for p in members),
        *(p for env in policy.environments.values() for p in env.deployers),
        *(p for env in policy.environments.values() for p in env.approvers),
    ]
    return sorted({Principal.parse(e).id for e in entries if e.startswith("rocketchat:")})


class Identities:
    def __init__(self, policy: Policy, rocketchat_ids: Mapping[str, str] | None = None) -> None:
        self.policy = policy
        self.rocketchat_ids = dict(rocketchat_ids or {})
        self._person_of: dict[Principal, str] = {}
        for person, ids in policy.people.items():
            for text in ids:
                self._person_of[self.canonical(Principal.parse(text))] = person

    def canonical(self, principal: Principal) -> Principal:
        """The principal as the platform identifies it: Rocket.Chat names become ids."""
        if principal.kind == "rocketchat":
            return Principal("rocketchat", self.rocketchat_ids.get(principal.id, principal.id))
        return principal

    def expand(self, entries: Iterable[str]) -> set[Principal]:
        """Users and platform groups that `entries` stand for (groups and people opened)."""
        found: set[Principal] = set()
        for text in entries:
            principal = Principal.parse(text)
            if principal.kind == "group":
                found |= self.expand(self.policy.groups.get(principal.id, []))
            elif principal.kind == "person":
                found |= self.expand(self.policy.people.get(principal.id, []))
            else:
                found.add(self.canonical(principal))
        return found

    def is_listed(
        self, principal: Principal, groups: Iterable[Principal], allowed: Sequence[str]
    ) -> bool:
        """True when `principal`, or a platform group it is in, is among `allowed`."""
        listed = self.expand(allowed)
        return principal in listed or any(group in listed for group in groups)

    def identity(self, principal: Principal) -> str:
        """Who this is, for counting and for telling people apart: `person:NAME` for someone
        the policy knows as a person (under any of their ids), else the principal itself."""
        person = self._person_of.get(principal)
        return f"person:{person}" if person else str(principal)

    def same_person(self, a: Principal, b: Principal) -> bool:
        return self.identity(a) == self.identity(b)

    def still_counted(
        self,
        env: str,
        requester: Principal,
        approvals: Iterable[Approval],
        slack_groups: Mapping[str, frozenset[str]] | None = None,
    ) -> tuple[list[Approval], list[str]]:
        """Which approvals still count under this policy, and why the others do not. With
        `slack_groups` (the bot's fresh readings), a Slack user group an approver was in
        counts only while it still holds them."""
        approvers = self.policy.environments[env].approvers
        counted: dict[str, Approval] = {}
        dropped: list[str] = []
        for approval in approvals:
            principal = Principal.of(approval.principal)
            groups = [Principal.of(g) for g in approval.groups]
            if slack_groups is not None:
                groups = [
                    g
                    for g in groups
                    if g.kind != "slack-group"
                    or principal.id in slack_groups.get(g.id, frozenset())
                ]
            who = self.identity(principal)
            if who == self.identity(requester):
                dropped.append(f"{approval.principal} is the requester")
            elif not self.is_listed(principal, groups, approvers):
                dropped.append(f"{approval.principal} is no longer an approver of {env}")
            elif who in counted:
                dropped.append(f"{approval.principal} is {who}, who approved already")
            else:
                counted[who] = approval
        return list(counted.values()), dropped
