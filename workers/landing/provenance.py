"""Whether a commit on the branch is the change releasegate landed for a request.

A `Releasegate-Request` trailer is text anyone with write access can type. A commit found
by its trailer counts as the request's landing only when it makes exactly the approved
change (the same files, the same edits as the diff people approved) and, where releasegate
wrote it itself, carries releasegate's committer identity and, with `trusted_signers`, a
signature that verifies. Otherwise it is somebody else's commit, and the request is
landed (or refused) on its own merits.
"""

from __future__ import annotations

from config.errors import ReleasegateError
from config.policy import Policy
from workers.git.checkout import Checkout
from workers.git.signing import verify_head
from workers.rules.plan import Plan, diff_part, pins_of, same_change
from workers.state.request import DeployRequest


def pinned_files(policy: Policy, request: DeployRequest, repository: str) -> set[str]:
    """The files the request's pins live in, in `repository`: all its change there may touch."""
    pinned = (pin for c in request.changes for pin in pins_of(policy, c.app, c.env))
    return {pin.file for pin in pinned if pin.repository == repository}


def landed_change(checkout: Checkout, commit: str) -> tuple[set[str], str]:
    """The files `commit` changes against its first parent, and its diff as releasegate
    shows one (the request card's form, so the two compare edit by edit)."""
    files = set(checkout.changed_files(commit))
    parent = checkout.first_parent(commit)
    plan = Plan(["here"])
    for file in sorted(files):
        plan.before[("here", file)] = checkout.file_at(parent, file) or ""
        plan.after[("here", file)] = checkout.file_at(commit, file) or ""
    return files, plan.diff("here")


def not_ours(
    policy: Policy,
    checkout: Checkout,
    request: DeployRequest,
    commit: str,
    name: str,
    *,
    by_forge: bool = False,
) -> str | None:
    """Why `commit` is not the request's landing in repository `name`, or None when it is.
    `by_forge`: the forge wrote the commit (a merge request's squash or merge), so its
    committer is the forge's."""
    repository = policy.repositories[name]
    try:
        if not by_forge:
            committer = checkout.committer(commit)
            if committer != repository.author:
                return f"its committer is {committer}, not {repository.author}"
            if repository.trusted_signers is not None:
                verify_head(checkout.path, commit, repository.trusted_signers)
        files, diff = landed_change(checkout, commit)
        allowed = pinned_files(policy, request, name)
    except ReleasegateError as exc:
        return str(exc)
    if not files or not files <= allowed:
        extra = ", ".join(sorted(files - allowed)) or "nothing"
        return f"it changes more than the approved change ({extra})"
    if not same_change(diff_part(request.diff, name), diff):
        return "its edits are not the approved change"
    return None
