"""Reading commits a checkout has already fetched (never asking a remote): which request
landed where, what a commit changed, and who wrote it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from config.errors import RemoteUnreachable

TRAILER_SCAN_DEPTH = 2000  # commits searched for a request's trailer
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # an object name, never an option


class _Reads(Protocol):
    path: Path

    @property
    def remote_ref(self) -> str: ...

    def _git(
        self,
        *args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        strip: bool = True,
        given: str | None = None,
    ) -> str: ...


class FetchedHistory:
    """What `Checkout` reads of the fetched branch."""

    def committer(self: _Reads, commit: str) -> str:
        """`Name <email>` of the commit's committer."""
        return self._git("log", "-1", "--format=%cn <%ce>", commit, "--", cwd=self.path)

    def first_parent(self: _Reads, commit: str) -> str:
        return self._git("rev-parse", "--verify", f"{commit}^1", cwd=self.path)

    def changed_files(self: _Reads, commit: str) -> list[str]:
        """The files `commit` changes against its first parent (a merge: against the branch
        it merged into)."""
        out = self._git(
            "diff", "--no-renames", "--name-only", f"{commit}^1", commit, "--", cwd=self.path
        )
        return [line for line in out.splitlines() if line]

    def file_at(self: _Reads, commit: str, file: str) -> str | None:
        """The text of `file` at `commit`, or None where it does not exist there."""
        try:
            return self._git("cat-file", "blob", f"{commit}:{file}", cwd=self.path, strip=False)
        except RemoteUnreachable:  # git's own words: no such path in that commit
            return None

    def is_on_branch(self: _Reads, commit: str) -> bool:
        """Whether `commit` is the fetched branch head or comes before it."""
        try:
            self._git("merge-base", "--is-ancestor", commit, self.remote_ref, cwd=self.path)
        except RemoteUnreachable:
            return False
        return True

    def request_commits(self: _Reads, since: Sequence[str | None] = ()) -> dict[str, str]:
        """Request id -> commit, for the request trailers on the remote branch.

        `since` are the heads the requests were read at: a request's commit comes after its
        own, so the commits after the oldest of them are all there is to read, however many.
        Where one is not known (an older request, a head this store never saw), the branch's
        last `TRAILER_SCAN_DEPTH` commits are read instead. Bounded by commits, never by
        date: a commit with an old committer date does not hide the ones behind it.
        """
        if since and all(s and _COMMIT.fullmatch(s) for s in since):
            bases = sorted({s for s in since if s})
            try:
                # Their common ancestor: the oldest, on a branch that only moves forward.
                oldest = bases[0]
                if len(bases) > 1:
                    oldest = self._git("merge-base", "--octopus", *bases, cwd=self.path)
                return _trailers(_log(self, f"^{oldest}"))
            except RemoteUnreachable:  # git's own words: a base this store does not have
                pass
        return _trailers(_log(self, f"--max-count={TRAILER_SCAN_DEPTH}"))


def _log(checkout: _Reads, bound: str) -> str:
    """Each commit of the fetched branch within `bound`, with its request trailers."""
    return checkout._git(
        "log",
        checkout.remote_ref,
        bound,
        "--format=%H%x1f%(trailers:key=Releasegate-Request,valueonly,separator=%x2C)%x1e",
        "--",
        cwd=checkout.path,
    )


def _trailers(log: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for record in log.split("\x1e"):
        sha, _, ids = record.strip("\n").partition("\x1f")
        for request_id in filter(None, (i.strip() for i in ids.split(","))):
            found.setdefault(request_id, sha)
    return found
