"""Every git process of ours starts here: `git ARGS` with the environment that keeps a
repository's own config from running anything (hooks, fsmonitor, pager, signing programs,
submodules: `workers/git/env.py`), bounded in time. Callers say failures in their own words;
what git said is passed through `git_said` (bounded, secrets masked)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from config.errors import GitOpsError
from workers.git.env import git_env


class GitTimedOut(GitOpsError):
    """A git process that did not finish in its time."""


def verb(args: Sequence[str]) -> str:
    """The git subcommand among `args` (after any `-c name=value` and `--git-dir DIR`)."""
    rest = list(args)
    while rest[:1] in (["-c"], ["--git-dir"]):
        rest = rest[2:]
    return rest[0] if rest else "?"


def run_git(
    *args: str,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    given: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """`git ARGS` run to its end (a non-zero exit is the caller's to judge), with `env` (a
    whole environment from `git_env`, default the plain one) and `given` on its input."""
    try:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=dict(env) if env is not None else git_env(),
            input=given,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise GitTimedOut(f"git {verb(args)} took longer than {timeout:.0f}s") from exc


def start_git(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`git ARGS` left running, its input and output ours (`cat-file --batch`)."""
    return subprocess.Popen(
        ["git", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=dict(env) if env is not None else git_env(),
    )
