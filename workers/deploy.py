"""Apply an approved request to the GitOps repository: one commit, pushed, or nothing.

The loop fetches, checks the request was not already committed (its id is in
a trailer), re-checks that every pin still holds the approved old version and
that the diff is still the one people approved, writes, runs the
environment's validation command, commits and pushes. A push that loses a race starts over from a
fresh fetch, a bounded number of times.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from config.errors import GitOpsError, PushRejected, StaleRequest, ValidationFailed
from config.policy import Policy
from workers.commit import commit_message
from workers.gitops import Checkout
from workers.plan import current_version, plan_changes, same_change
from workers.request import DeployRequest

log = logging.getLogger(__name__)

MAX_PUSH_ATTEMPTS = 5
VALIDATION_TIMEOUT = 300
VALIDATION_OUTPUT_LINES = 20


def validate(command: str, tree: Path) -> None:
    """Run the environment's validation command in the changed tree; raise with its output."""
    try:
        done = subprocess.run(
            shlex.split(command), cwd=tree, capture_output=True, text=True,
            timeout=VALIDATION_TIMEOUT, check=False,
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise ValidationFailed(f"validation command not found: {command}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ValidationFailed(f"`{command}` took longer than {VALIDATION_TIMEOUT}s") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-VALIDATION_OUTPUT_LINES:]
        shown = "\n".join(output)
        raise ValidationFailed(f"`{command}` failed (exit {done.returncode}):\n{shown}")


@dataclass(frozen=True)
class Applied:
    commit: str | None  # None: the pins already held the new versions
    already_pushed: bool = False
    attempts: int = 1


def _check_not_moved(policy: Policy, checkout: Checkout, request: DeployRequest) -> None:
    for change in request.changes:
        now = current_version(policy, checkout.read, change.app, change.env)
        if now not in (change.old, change.new):
            raise StaleRequest(
                f"{change.app} in {change.env} is now {now}, but the request approved "
                f"{change.old} -> {change.new}; ask again with a new request"
            )


def apply_request(
    policy: Policy,
    checkout: Checkout,
    request: DeployRequest,
    approvers: Sequence[str],
    max_attempts: int = MAX_PUSH_ATTEMPTS,
    gates: Callable[[], None] = lambda: None,
    on_retry: Callable[[], None] = lambda: None,
) -> Applied:
    """Commit and push `request`; safe to call again for the same request.

    `gates` runs right before each commit and raises to stop it (a lock taken
    or a window closed while the job waited).
    """
    refused: PushRejected | None = None
    last_head = None
    for attempt in range(1, max_attempts + 1):
        head = checkout.sync()
        if refused is not None and head == last_head:
            raise GitOpsError(f"the remote refused the push: {refused}")
        last_head = head
        if sha := checkout.find_request_commit(request.id, request.created_at):
            log.info("already committed as %s", sha[:7])
            return Applied(sha, already_pushed=True, attempts=attempt)
        _check_not_moved(policy, checkout, request)
        plan = plan_changes(policy, checkout.read, request.changes)
        if not plan.changed_files:
            return Applied(None, attempts=attempt)
        if not same_change(request.diff, plan.diff()):
            raise StaleRequest(
                "the files changed since the request was made, so the change would not be "
                "the one shown and approved; ask again with a new request"
            )
        for file in plan.changed_files:
            checkout.write(file, plan.after[file])
        if command := policy.environments[request.env].validate_command:
            validate(command, checkout.path)
        gates()
        sha = checkout.commit(commit_message(request, approvers), plan.changed_files)
        try:
            checkout.push()
        except PushRejected as exc:
            log.warning("attempt %d/%d: %s; fetching and retrying", attempt, max_attempts, exc)
            refused = exc
            on_retry()
            continue
        log.info("pushed %s after %d attempt(s)", sha[:7], attempt)
        return Applied(sha, attempts=attempt)
    raise GitOpsError(
        f"gave up after {max_attempts} attempts: the branch kept moving under us; try again"
    )
