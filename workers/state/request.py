"""A deploy request: the immutable thing people approve, and the states it moves through."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class RequestState(StrEnum):
    PENDING = "pending"  # waiting for approvals
    APPROVED = "approved"  # queued for a worker
    RUNNING = "running"  # a worker is applying it
    PUSHED = "pushed"  # committed and pushed to the branch
    MERGED = "merged"  # landed on the branch through the forge's pull (merge) request
    NOOP = "noop"  # the pins already held the versions; nothing committed
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"  # another request landed first and moved the pin it would change

    @property
    def final(self) -> bool:
        return self in FINAL_STATES

    @property
    def landed(self) -> bool:
        """The request's commit is on the branch (pushed, or merged by the forge)."""
        return self in (RequestState.PUSHED, RequestState.MERGED)


FINAL_STATES = frozenset(
    {
        RequestState.PUSHED,
        RequestState.MERGED,
        RequestState.NOOP,
        RequestState.FAILED,
        RequestState.REJECTED,
        RequestState.CANCELLED,
        RequestState.EXPIRED,
        RequestState.SUPERSEDED,
    }
)

_ID_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L: ids get typed by hand


def new_request_id() -> str:
    return "R" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))


class Change(BaseModel):
    """One app moving from one version to another in one environment."""

    model_config = ConfigDict(frozen=True)

    app: str
    env: str
    old: str
    new: str
    # A promotion: what the upstream environment ran, "int 2.2.0-rc1" (prd takes 2.2.0).
    promoted_from: str = ""

    def line(self) -> str:
        return f"{self.app}: {self.old or '(unset)'} -> {self.new} ({self.env})"


class Built(BaseModel):
    """The artifact a change's version named when it was asked for: what the approval binds."""

    model_config = ConfigDict(frozen=True)

    app: str
    tag: str
    digest: str  # sha256:… (an image, a chart), or the commit a Git tag pointed to
    created: str = ""
    source: str = ""  # where it was built from (org.opencontainers.image.source)
    revision: str = ""  # the source commit (org.opencontainers.image.revision)
    # A promotion whose upstream runs another digest under this tag: "int sha256:…".
    upstream: str = ""
    # The pins name it by its tag alone (no digest beside it): the registry can move it.
    by_tag: bool = False
    # The key (its id) whose cosign signature of the digest verified, where one is asked for.
    signed_by: str = ""


class DeployRequest(BaseModel):
    """What was asked and what an approval binds to. Never changes after creation."""

    model_config = ConfigDict(frozen=True)

    id: str
    verb: str
    env: str
    changes: tuple[Change, ...]
    requester: str
    requester_name: str
    channel: str
    thread: str | None = None
    approvals_needed: int
    created_at: datetime
    expires_at: datetime | None = None
    base_commit: str
    # Each repository's head when the request was read (its diff's base): the request's own
    # commit can only come after it. Empty for requests filed before it was kept.
    bases: dict[str, str] = {}
    diff: str
    artifacts: tuple[Built, ...] = ()  # each change's artifact, where the app names a store
    # What the gates found when it was filed ("✓ no firing alert matches …"), for the card.
    evidence: tuple[str, ...] = ()
    # A break-glass deploy's reason (`deploy! … reason TEXT`): it skipped the gates.
    break_glass: str = ""
    # A rollback releasegate filed itself (a failed verification): the request it undoes,
    # and why. It lands without approvals, windows or locks.
    rollback_of: str = ""
    reason: str = ""
    # Decided once, when filed: the repositories it lands in (in landing order), and the
    # one of them it lands in through a merge request ("" when it pushes everywhere). Empty
    # for requests filed before this was kept: `workers/rules/plan.landing` decides those.
    repositories: tuple[str, ...] = ()
    merge_request_in: str = ""

    @property
    def subject(self) -> str:
        if self.rollback_of:
            apps = ", ".join(f"{c.app} {c.new}" for c in self.changes)
            return f"Roll back {self.env} to {apps}"[:72]
        if self.verb == "rollback":
            change = self.changes[0]
            return f"Roll back {change.app} to {change.new} in {change.env}"
        if len(self.changes) == 1:
            change = self.changes[0]
            return f"Deploy {change.app} {change.new} to {change.env}"
        apps = ", ".join(f"{c.app} {c.new}" for c in self.changes)
        summary = f"Release train to {self.env}: {apps}"
        return (
            summary
            if len(summary) <= 72
            else f"Release train to {self.env}: {len(self.changes)} apps"
        )


class Result(BaseModel):
    """How a request ended (or, from a landing step, how it is to end), as the worker or a
    person decided it."""

    model_config = ConfigDict(frozen=True)

    state: RequestState
    # Why, in words: an error's own message, or a person's decision. Empty where `reason`
    # says it as data for the bot to word (`bot.messages.result_text`).
    message: str = ""
    reason: str = ""  # already_there | superseded | crashed | kept_moving
    facts: dict[str, str] = Field(default_factory=dict)
    commit: str | None = None  # the first repository's commit (the only one's, usually)
    commits: dict[str, str] = Field(default_factory=dict)  # repository -> commit, where landed
    finished_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Approval:
    """One counted approval: who (`person:NAME`, else the principal), as which id, and in
    which platform groups they were when they approved."""

    identity: str
    principal: str
    groups: tuple[str, ...] = ()
    name: str = ""  # how the platform called them then (for cards; never to decide)

    def to_json(self) -> str:
        data = {"principal": self.principal, "groups": list(self.groups), "name": self.name}
        return json.dumps(data)

    @classmethod
    def from_json(cls, identity: str, raw: str) -> Approval:
        data = json.loads(raw)
        groups = tuple(str(g) for g in data.get("groups", []))
        return cls(identity, str(data["principal"]), groups, str(data.get("name", "")))
