"""What ran where, read from Git: the versions an environment's pins held over time.

Promotion checks, rollbacks and `history` read the repository's history of
the pinned files, not a cache, so they stay true when people also edit the
repository by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from config.errors import PinError
from config.policy import Pin, Policy
from workers import pins
from workers.git.mirror import Snapshot
from workers.git.mirrors import View
from workers.rules.plan import pins_of

HISTORY_DEPTH = 300  # commits per pinned file: enough for months of deploys


@dataclass(frozen=True)
class Ran:
    version: str
    commit: str
    since: datetime


def versions_run(policy: Policy, view: View, app: str, env: str) -> list[Ran]:
    """Every version `app`'s first pin in `env` held, newest first, one entry per change."""
    pin = pins_of(policy, app, env)[0]
    repo = view[pin.repository]
    return list(repo.memo(("versions_run", pin), lambda: _versions_run(repo, pin)))


def _versions_run(repo: Snapshot, pin: Pin) -> list[Ran]:
    ran: list[Ran] = []
    for commit, timestamp in repo.file_history(pin.file, HISTORY_DEPTH):
        try:
            text = repo.read_at(commit, pin.file)
            if text is None:
                continue
            version = pins.read_version(text, pin)
        except PinError:
            continue  # the file had another shape (or was not a plain file) back then
        when = datetime.fromtimestamp(timestamp, UTC)
        if ran and ran[-1].version == version:
            ran[-1] = Ran(version, commit, when)  # the same version, set earlier
        else:
            ran.append(Ran(version, commit, when))
    return ran


def rollback_target(policy: Policy, view: View, app: str, env: str) -> str | None:
    """The version a rollback of `app` in `env` goes back to, or None.

    History is read as a stack of deploys: a deploy pushes its version, a rollback (a commit
    with `Releasegate-Kind: rollback`) pops back to the version it restored. So rolling back
    twice steps back twice, and never returns to the version just rolled back from.
    """
    pin = pins_of(policy, app, env)[0]
    rollbacks = {
        entry["commit"]
        for entry in view[pin.repository].log_with_trailers([pin.file], HISTORY_DEPTH)
        if entry["Releasegate-Kind"] == "rollback"
    }
    stack: list[str] = []
    for ran in reversed(versions_run(policy, view, app, env)):  # oldest first
        if ran.commit in rollbacks and ran.version in stack:
            while stack[-1] != ran.version:
                stack.pop()
        elif not stack or stack[-1] != ran.version:
            stack.append(ran.version)
    return stack[-2] if len(stack) > 1 else None


@dataclass(frozen=True)
class Deployment:
    repository: str
    commit: str
    when: datetime
    subject: str
    author: str
    request: str
    requested_by: str
    approved_by: str
    kind: str


def deployments(policy: Policy, view: View, env: str, limit: int) -> list[Deployment]:
    """The last commits that touched `env`'s pinned files in any repository, newest first,
    with who asked and who approved."""
    found: list[Deployment] = []
    for name in view:
        pinned = (pin for app in policy.apps.values() for pin in app.pins.get(env, []))
        files = sorted({pin.file for pin in pinned if pin.repository == name})
        if files:
            found += _deployments(name, view[name], files, limit)
    found.sort(key=lambda d: d.when, reverse=True)
    return found[:limit]


def _deployments(name: str, repo: Snapshot, files: list[str], limit: int) -> list[Deployment]:
    return [
        Deployment(
            repository=name,
            commit=entry["commit"],
            when=datetime.fromtimestamp(int(entry["time"]), UTC),
            subject=entry["subject"],
            author=entry["author"],
            request=entry["Releasegate-Request"],
            requested_by=entry["Requested-by"],
            approved_by=entry["Approved-by"],
            kind=entry["Releasegate-Kind"],
        )
        for entry in repo.log_with_trailers(files, limit)
    ]
