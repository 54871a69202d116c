"""Every error releasegate raises on purpose derives from one root.

    ReleasegateError
    ├── PolicyError          the policy file is invalid (one line per problem)
    ├── VersionError         a version string the app's pattern refuses
    ├── PinError             a pinned version could not be read or written
    │   ├── PinNotFound
    │   ├── PinAmbiguous
    │   └── StaleRequest     the repository moved since the request was approved
    ├── ValidationFailed     the environment's validation command refused the change
    ├── ApprovalsChanged     at commit time, the approvals no longer meet the policy
    ├── GitOpsError          the GitOps repository could not be read or written
    │   ├── RemoteUnreachable
    │   └── PushRejected     lost a race or the remote refused; retried, bounded
    ├── UnknownRequest       no request with that id
    ├── PostFailed           a chat platform did not take our message (kept, retried)
    └── Refused              a chat request the rules do not allow

Messages are written for the person who has to act on them: they name the
file, pin, version or principal involved, and never contain a secret.
"""

from __future__ import annotations

from collections.abc import Sequence


class ReleasegateError(Exception):
    """Root of every error releasegate raises on purpose."""


class PolicyError(ReleasegateError):
    """The policy file is invalid; `problems` holds one `path: message` per problem."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"invalid policy {source}:\n{lines}")


class VersionError(ReleasegateError):
    """A version string that the app's version pattern does not accept."""


class PinError(ReleasegateError):
    """A pinned version could not be read or written."""


class PinNotFound(PinError):
    """The pin's file, entry or key is missing."""


class PinAmbiguous(PinError):
    """The pin matches more than one place in its file."""


class StaleRequest(PinError):
    """The repository moved since approval; the approved change no longer applies as shown.
    `reason` (`moved`, `diff_changed`) and `facts` say it as data, for the chat's words."""

    def __init__(self, reason: str, **facts: str) -> None:
        self.reason = reason
        self.facts = facts
        detail = ", ".join(f"{k}={v}" for k, v in facts.items())
        super().__init__(f"stale request: {reason}" + (f" ({detail})" if detail else ""))


class ValidationFailed(ReleasegateError):
    """The environment's validation command failed on the changed working tree."""


class ApprovalsChanged(ReleasegateError):
    """Right before the commit, the approvals no longer meet the policy the worker loaded."""


class GitOpsError(ReleasegateError):
    """The GitOps repository could not be read or written."""


class RemoteUnreachable(GitOpsError):
    """Fetching from or pushing to the remote failed for a reason other than a race."""


class PushRejected(GitOpsError):
    """The remote refused our push, usually because someone else pushed first."""


class UnknownRequest(ReleasegateError):
    """No request with that id exists."""


class PostFailed(ReleasegateError):
    """A chat platform did not take our message."""


class Refused(ReleasegateError):
    """A chat request the rules do not allow; `reason` is a short code for metrics and logs."""

    def __init__(self, message: str, reason: str) -> None:
        self.reason = reason
        self.request = ""  # the request it concerns, where there is one (for the audit)
        super().__init__(message)


class ReconcilerError(ReleasegateError):
    """Argo CD or the Kubernetes API could not tell how a rollout goes."""


class ReconcilerRefused(ReconcilerError):
    """The reconciler said no for good (a wrong token, missing rights, no such application):
    following stops and says why; asking again would not help."""
