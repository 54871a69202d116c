"""Signed commits: every commit releasegate makes is signed when a key is set, and the head
it builds on can be required to carry a trusted signature.

`RELEASEGATE_GIT_SIGNING_KEY` is the path of an SSH private key (git's `gpg.format=ssh`) or
`gpg:KEYID` for a key in the worker's GnuPG keyring (`GNUPGHOME`). The policy's
`repository.require_signed` makes a worker without a key refuse to start;
`repository.trusted_signers` (an SSH allowed-signers file) makes a worker refuse to commit
on top of a head whose signature does not verify against it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from config.errors import GitOpsError, ReleasegateError
from config.policy import Repository
from workers.git.run import run_git

_KEY_ID = re.compile(r"[0-9A-Fa-f]{8,40}|[^\s@<>]+@[^\s@<>]+")


class UntrustedHead(GitOpsError):
    """The branch head's signature does not verify against the trusted signers."""


@dataclass(frozen=True)
class Signer:
    key: str  # a private key's path, or gpg:KEYID

    @classmethod
    def from_setting(cls, value: str | None) -> Signer | None:
        if not value:
            return None
        signer = cls(value.strip())
        signer.check()
        return signer

    @property
    def gpg(self) -> bool:
        return self.key.startswith("gpg:")

    def check(self) -> None:
        if self.gpg:
            if not _KEY_ID.fullmatch(self.key[4:]):
                raise ReleasegateError(
                    f"RELEASEGATE_GIT_SIGNING_KEY: {self.key!r} is not gpg:KEYID (hex id or e-mail)"
                )
            return
        path = Path(self.key)
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ReleasegateError(
                f"RELEASEGATE_GIT_SIGNING_KEY: {self.key} is not a readable "
                "SSH private key file (or say gpg:KEYID)"
            )

    def git_options(self) -> list[str]:
        """`git -c …` options that make `commit-tree -S` sign with this key."""
        if self.gpg:
            return ["-c", "gpg.format=openpgp", "-c", f"user.signingkey={self.key[4:]}"]
        return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={Path(self.key).resolve()}"]


def require_key(repository: Repository, signer: Signer | None) -> None:
    """Refuse to go on without a key when the policy requires signed commits."""
    if repository.require_signed and signer is None:
        raise ReleasegateError(
            "the policy requires signed commits (repository.require_signed), but "
            "RELEASEGATE_GIT_SIGNING_KEY is not set: nothing will be committed unsigned"
        )


def verify_head(worktree: Path, commit: str, allowed_signers: Path) -> None:
    """Raise `UntrustedHead` unless `commit`'s SSH signature verifies against the file."""
    done = run_git(
        "-c",
        f"gpg.ssh.allowedSignersFile={allowed_signers}",
        "verify-commit",
        commit,
        cwd=worktree,
        timeout=30,
    )
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace")
        said = [line for line in stderr.strip().splitlines() if line.strip()]
        why = said[-1][:200] if said else "no signature"
        raise UntrustedHead(
            f"the branch head {commit[:7]} is not signed by a trusted signer ({why}); "
            "releasegate does not commit on top of it: have it re-signed or reverted by "
            "someone in repository.trusted_signers"
        )


HeadCheck = Callable[[str], None]


def signer_and_check(
    repository: Repository, setting: str | None, worktree: Callable[[], Path]
) -> tuple[Signer | None, HeadCheck]:
    """The signer for a worker's commits, and the check of the head it builds on: a key the
    policy requires, and a trusted signature on the head when `trusted_signers` is set. A bad
    key setting fails the check (each request says why) instead of the worker."""
    try:
        signer, problem = Signer.from_setting(setting), None
    except ReleasegateError as exc:
        signer, problem = None, str(exc)

    def check(head: str) -> None:
        if problem:
            raise ReleasegateError(problem)
        require_key(repository, signer)
        if repository.trusted_signers is not None:
            verify_head(worktree(), head, repository.trusted_signers)

    return signer, check
