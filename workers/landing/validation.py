"""The environment's validation command, run in the changed tree before a commit.

It is repository-controlled code, so it gets as little as it needs: a
minimal environment (PATH, HOME, LANG and the names the environment lists
under `validate_env`), a timeout, and an output from which every secret
value this process knows is removed before it reaches chat, audit or logs.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from config.errors import ValidationFailed

VALIDATION_TIMEOUT = 300
OUTPUT_LINES = 20
BASE_ENV = ("PATH", "HOME", "LANG")


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value (longest first) replaced by `***`."""
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def minimal_env(allowed: Sequence[str]) -> dict[str, str]:
    return {name: os.environ[name] for name in (*BASE_ENV, *allowed) if name in os.environ}


def validate(
    command: str,
    tree: Path,
    *,
    allowed_env: Sequence[str] = (),
    secrets: Iterable[str] = (),
    timeout: float = VALIDATION_TIMEOUT,
) -> None:
    """Run `command` in `tree`; raise `ValidationFailed` with its (redacted) output."""
    secrets = list(secrets)
    try:
        done = subprocess.run(
            shlex.split(command),
            cwd=tree,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
            env=minimal_env(allowed_env),
        )
    except (FileNotFoundError, PermissionError) as exc:
        raise ValidationFailed(f"validation command not found: {command}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ValidationFailed(f"`{command}` took longer than {timeout:.0f}s") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-OUTPUT_LINES:]
        shown = redact("\n".join(output), secrets)
        raise ValidationFailed(f"`{command}` failed (exit {done.returncode}):\n{shown}")
