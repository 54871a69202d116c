"""How every git process of ours runs: its environment, where a repository's clones live,
and what of a URL must never be shown."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from config.git_access import GitAccess
from config.policy import Repository


def redact_url(text: str) -> str:
    """`text` with the secrets of any URL in it masked, fit for logs and chat: a password
    (`user:***@`), and a token written as an HTTP(S) URL's user (`https://***@`). An SSH
    user (`ssh://git@host`) is a name, not a secret, and stays."""
    text = re.sub(r"(//[^/@:\s]*):[^/@\s]+@", r"\1:***@", text)
    return re.sub(r"(https?://)[^/@:\s]+@", r"\1***@", text)


GIT_SAYS_LINES = 12  # how much of git's own message we keep, from its first words on


def git_said(stderr: str, known_hosts: str = "") -> str:
    """git's whole message (bounded, secrets masked), with a clear first line for what
    people meet most: an SSH host key that is not known, or that changed."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    said = redact_url(" / ".join(lines[:GIT_SAYS_LINES]))
    where = known_hosts or "RELEASEGATE_GIT_KNOWN_HOSTS"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        return (
            f"the Git server's SSH host key is not the one in {where}: refused (someone "
            f"may be in the middle; if the server's key really changed, update {where}). "
            f"ssh said: {said}"
        )
    if "Host key verification failed" in stderr:
        return (
            f"the Git server's SSH host key is not in {where}: add it (ssh-keyscan), or "
            "set RELEASEGATE_GIT_ACCEPT_NEW_HOST_KEYS=true to trust it on first use. "
            f"ssh said: {said}"
        )
    return said


def url_credentials(url: str) -> list[str]:
    """The user and password written into a URL, if any: secrets to scrub from output."""
    found = re.search(r"//([^/@]+)@", url)
    return [part for part in found.group(1).split(":") if part] if found else []


# Settings that would let a repository's folder run code of its choosing when git reads its
# config, forced off for every git process of ours. Given in the environment
# (GIT_CONFIG_COUNT), they outrank every config file, the clone's own included: whatever was
# written into a slot's config, no hook, fsmonitor, pager or signing program of its choice
# runs, and no submodule is followed. (A slot whose config holds anything we did not write is
# thrown away besides: workers/git/slots.py.)
FORCED_CONFIG = {
    "core.hooksPath": "/dev/null",
    "core.fsmonitor": "false",
    "core.untrackedCache": "false",
    "core.pager": "cat",
    "core.editor": "true",
    "core.askPass": "",
    "gpg.program": "gpg",
    "gpg.ssh.program": "ssh-keygen",
    "gpg.x509.program": "gpgsm",
    "protocol.ext.allow": "never",
    "submodule.recurse": "false",
    "fetch.recurseSubmodules": "false",
    "diff.external": "",
}


def forced_config() -> dict[str, str]:
    """`FORCED_CONFIG` as environment variables git reads (git 2.31 and newer)."""
    env = {"GIT_CONFIG_COUNT": str(len(FORCED_CONFIG))}
    for number, (key, value) in enumerate(FORCED_CONFIG.items()):
        env[f"GIT_CONFIG_KEY_{number}"] = key
        env[f"GIT_CONFIG_VALUE_{number}"] = value
    return env


def git_env(access: GitAccess | None = None) -> dict[str, str]:
    """The environment every Git call of ours runs with (on top of the process's own)."""
    env = {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_LITERAL_PATHSPECS": "1",
        "GIT_NO_REPLACE_OBJECTS": "1",  # refs/replace/* never changes what a commit holds
        "GIT_SSH_COMMAND": (access or GitAccess()).ssh_command(),
        **forced_config(),
    }
    return {**os.environ, **env}


def repository_dir(repository: Repository, workdir: Path) -> Path:
    return workdir / hashlib.sha256(repository.url.encode()).hexdigest()[:12]
