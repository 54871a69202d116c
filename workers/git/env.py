"""How every git process of ours runs: its environment, where a repository's clones live,
and what of a URL must never be shown."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from pathlib import Path

from config.policy import Repository


def redact_url(url: str) -> str:
    """The URL without any user:password part, fit for logs and chat."""
    return re.sub(r"//[^/@]+@", "//***@", url)


def url_credentials(url: str) -> list[str]:
    """The user and password written into a URL, if any: secrets to scrub from output."""
    found = re.search(r"//([^/@]+)@", url)
    return [part for part in found.group(1).split(":") if part] if found else []


def git_env(ssh_key: Path | None) -> dict[str, str]:
    """The environment every Git call of ours runs with (on top of the process's own)."""
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_LITERAL_PATHSPECS": "1"}
    if ssh_key is not None:
        env["GIT_SSH_COMMAND"] = (
            f"ssh -i {shlex.quote(str(ssh_key))} -o IdentitiesOnly=yes "
            "-o StrictHostKeyChecking=accept-new"
        )
    return {**os.environ, **env}


def repository_dir(repository: Repository, workdir: Path) -> Path:
    return workdir / hashlib.sha256(repository.url.encode()).hexdigest()[:12]
