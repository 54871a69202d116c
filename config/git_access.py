"""How releasegate's git reaches an SSH remote: the deploy key and the host keys it trusts."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GitAccess:
    """How our git reaches an SSH remote: the deploy key, and whose word on the server's host
    key counts.

    A host key is checked against `known_hosts` (RELEASEGATE_GIT_KNOWN_HOSTS; the chart
    mounts `git.knownHosts` there) with `StrictHostKeyChecking=yes`: a server whose key is
    not in it, or another key for its host and port (a man in the middle), is refused.
    Without a known_hosts setting, the user's `~/.ssh/known_hosts` (and the system's) is
    read, never written. Only `accept_new` (RELEASEGATE_GIT_ACCEPT_NEW_HOST_KEYS, trust on
    first use) takes a new host's key, and then into `workdir/known_hosts`, never outside
    our work directory."""

    ssh_key: Path | None = None
    known_hosts: Path | None = None
    accept_new: bool = False
    workdir: Path | None = None

    @property
    def known_hosts_file(self) -> Path:
        """Where host keys are looked up (and, only with `accept_new`, written)."""
        if self.known_hosts is not None:
            return self.known_hosts
        if self.accept_new:
            return (self.workdir or Path.home()) / "known_hosts"
        return Path.home() / ".ssh" / "known_hosts"

    def ssh_command(self) -> str:
        options = ["-o", "BatchMode=yes"]
        if self.ssh_key is not None:
            options += ["-i", str(self.ssh_key), "-o", "IdentitiesOnly=yes"]
        checking = "accept-new" if self.accept_new else "yes"
        options += [
            "-o",
            f"StrictHostKeyChecking={checking}",
            "-o",
            f"UserKnownHostsFile={self.known_hosts_file}",
        ]
        if self.known_hosts is not None:  # the operator's file, and no other, is the truth
            options += ["-o", "GlobalKnownHostsFile=/dev/null"]
        return "ssh " + " ".join(shlex.quote(o) for o in options)
