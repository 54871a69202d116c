"""The commits a checkout makes, from the planned bytes, and the check that what is about to
be pushed is exactly them.

A commit's blobs are made from the planned text of each file (`hash-object --no-filters`,
checked against the id those bytes must have) and staged with `update-index --index-info`,
never read back from a working tree anything else could have written. Before a push, the
commits between the fetched head and ours must be exactly ours, one on the other, each
changing exactly its planned files to the planned blobs (workers/git/integrity.py).
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from config.policy import Repository
from workers.git.integrity import TamperedCommit, blob_id, diff_problem, parse_diff_tree
from workers.git.signing import Signer

_COMMIT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class _Commits(Protocol):
    path: Path
    base: Path
    repository: Repository
    signer: Signer | None
    planned: dict[str, dict[str, str]]
    _dirty: bool

    def _git(
        self,
        *args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        strip: bool = True,
        given: str | None = None,
    ) -> str: ...

    def _inside(self, file: str) -> Path: ...

    def _write_blobs(self, planned: Mapping[str, str]) -> dict[str, str]: ...

    def _mode(self, file: str) -> str: ...

    def _made(self) -> str: ...


class PlannedCommits:
    """What `Checkout` commits, and checks before it pushes."""

    def commit(
        self: _Commits,
        message: str,
        planned: Mapping[str, str],
        env: dict[str, str] | None = None,
    ) -> str:
        """Commit the planned text of each file (path -> text) on top of HEAD; HEAD moves to
        it. The blobs are made from `planned`, never read back from the working tree."""
        name, email = self.repository.author[:-1].split(" <", 1)
        identity = {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
            "GIT_LITERAL_PATHSPECS": "1",
            **(env or {}),
        }
        here = Path(self.path)
        blobs = self._write_blobs(planned)
        # Only our files are staged, each at the blob made from its planned bytes, with the
        # mode it has; `git commit` writes the tree from the sparse index (`write-tree`
        # would expand it to every file of the repository first).
        entries = "".join(f"{self._mode(path)} {blobs[path]}\t{path}\0" for path in planned)
        self._git("update-index", "-z", "--index-info", cwd=here, env=identity, given=entries)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=self.base, delete=False) as f:
            f.write(message)
        try:
            sign = [*self.signer.git_options(), "commit", "-S"] if self.signer else ["commit"]
            self._git(
                *sign,
                "--quiet",
                "--no-verify",
                "--allow-empty",
                "--cleanup=verbatim",
                "-F",
                f.name,
                *([] if self.signer else ["--no-gpg-sign"]),
                cwd=here,
                env=identity,
            )
            commit = self._made()
        finally:
            os.unlink(f.name)
        self.planned[commit] = blobs
        self._dirty = False  # what we wrote is committed; the tree is clean again
        return str(commit)

    def _made(self: _Commits) -> str:
        """The commit `git commit` just made: the slot's detached HEAD, read from its worktree
        entry rather than asked of one more git process (a burst of 50 deploys makes 50).
        What it is built on is checked before any push (`verify_unpushed`)."""
        entry = self.base / "store.git" / "worktrees" / self.path.name / "HEAD"
        said = entry.read_text(encoding="ascii", errors="replace").strip()
        if _COMMIT_ID.fullmatch(said):
            return said
        return self._git("rev-parse", "--verify", "HEAD", cwd=self.path)

    def _write_blobs(self: _Commits, planned: Mapping[str, str]) -> dict[str, str]:
        """Store each planned text as a blob (no filters: `.gitattributes` chooses nothing);
        returns path -> blob id, checked against the id the bytes must have."""
        with tempfile.TemporaryDirectory(dir=self.base) as folder:
            paths = []
            for number, text in enumerate(planned.values()):
                paths.append(Path(folder, str(number)))
                paths[-1].write_bytes(text.encode("utf-8"))
            listed = "".join(f"{path}\n" for path in paths)
            ids = self._git(
                "hash-object", "-w", "--no-filters", "--stdin-paths", cwd=self.path, given=listed
            ).split()
        blobs = dict(zip(planned, ids, strict=True))
        for path, text in planned.items():
            if blobs[path] != blob_id(text.encode("utf-8"), len(blobs[path])):
                raise TamperedCommit(f"git stored {path} as other bytes than planned")
        return blobs

    def _mode(self: _Commits, file: str) -> str:
        executable = os.lstat(self._inside(file)).st_mode & stat.S_IXUSR
        return "100755" if executable else "100644"

    def verify_unpushed(self: _Commits, base: str) -> None:
        """Raise `TamperedCommit` unless the commits from `base` to HEAD are exactly ours, one
        on the other, each changing exactly its planned files to the planned blobs."""
        here = Path(self.path)
        chain = [
            line.split()
            for line in self._git(
                "rev-list", "--parents", "--reverse", f"{base}..HEAD", cwd=here
            ).splitlines()
        ]
        if not chain:
            return
        listed = "".join(f"{commit}\n" for commit, *_ in chain)
        # Asked of the shared store, not the slot: in a worktree, diff-tree reads the index
        # and expands the sparse one to every file of the repository first (50 ms of 10,000).
        raw = self._git(
            "--git-dir",
            str(self.base / "store.git"),
            "diff-tree",
            "--stdin",
            "-r",
            "-z",
            "--raw",
            "--no-renames",
            given=listed,
            strip=False,
        )
        diffs = parse_diff_tree(raw)
        parent = base
        for commit, *parents in chain:
            planned = self.planned.get(commit)
            if planned is None:
                raise TamperedCommit(
                    f"{commit[:7]} on top of {base[:7]} is not a commit releasegate made"
                )
            if parents != [parent]:
                raise TamperedCommit(f"{commit[:7]} is not built on {parent[:7]} alone")
            if problem := diff_problem(diffs.get(commit, []), planned):
                raise TamperedCommit(f"{commit[:7]} is not the approved change: {problem}")
            parent = commit
