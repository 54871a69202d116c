"""The environment's validation command, run on a copy of the changed tree before a commit.

It is the repository's code: it runs in the sandbox (`workers/landing/sandbox.py`), away
from every secret and within limits, on a copy of the tree without `.git`, so nothing it
writes reaches the clone the commit is made in. Without bubblewrap the worker refuses to run
it, unless the operator says `RELEASEGATE_VALIDATE_SANDBOX=none`.

Whatever the sandbox, every secret value this process knows is blanked out of its output
before it reaches chat, audit or logs, and only the output's tail is read.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from config.errors import ValidationFailed
from workers.landing.sandbox import SANDBOX_PATH, SANDBOX_TMP, Sandbox

OUTPUT_LINES = 20
OUTPUT_TAIL = 64 * 1024  # bytes of the output read back, from its end
BASE_ENV = ("PATH", "LANG")


@contextmanager
def validation_copy(tree: Path) -> Iterator[Path]:
    """A copy of `tree` without its `.git`, in a new folder under the system's temporary
    folder (where the sandbox's user can reach it), removed after the block: the validator
    works there, so nothing it writes (a planted `.git`, a rewritten pin) reaches the clone
    the commit is made in."""
    with tempfile.TemporaryDirectory(prefix="releasegate-validate-") as folder:
        os.chmod(folder, 0o711)  # noqa: S103 - passable, not listable: the copy's owner enters
        copy = Path(folder) / "tree"
        shutil.copytree(tree, copy, symlinks=True, ignore=_top_level_git(tree))
        yield copy


def _top_level_git(tree: Path) -> Callable[[str, list[str]], list[str]]:
    def ignore(folder: str, names: list[str]) -> list[str]:
        return [".git"] if Path(folder) == tree and ".git" in names else []

    return ignore


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value (longest first) replaced by `***`."""
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def minimal_env(allowed: Sequence[str], sandboxed: bool) -> dict[str, str]:
    names = (*BASE_ENV, *allowed) if sandboxed else (*BASE_ENV, "HOME", *allowed)
    env = {name: os.environ[name] for name in names if name in os.environ}
    if sandboxed:
        env["PATH"], env["HOME"] = SANDBOX_PATH, SANDBOX_TMP
    return env


def validate(
    command: str,
    tree: Path,
    *,
    allowed_env: Sequence[str] = (),
    secrets: Iterable[str] = (),
    sandbox: Sandbox | None = None,
) -> None:
    """Run `command` on a copy of `tree`; raise `ValidationFailed` with its (redacted)
    output, and the sandbox's limit it ran into where one can tell."""
    secrets = list(secrets)
    sandbox = sandbox or Sandbox()
    env = minimal_env(allowed_env, sandbox.kind != "none")
    words = shlex.split(command)
    if "/" not in words[0] and shutil.which(words[0], path=env.get("PATH")) is None:
        raise ValidationFailed(f"validation command not found: {command}")
    # The command gets a copy of the tree without .git; nothing it writes there comes back.
    with validation_copy(tree) as copy:
        _run(command, sandbox.argv(words, copy), copy, env, sandbox, secrets)


def _run(
    command: str,
    argv: list[str],
    tree: Path,
    env: dict[str, str],
    sandbox: Sandbox,
    secrets: list[str],
) -> None:
    limits = sandbox.limits
    sandbox.prepare(tree)
    with tempfile.TemporaryFile() as output:
        try:
            process = subprocess.Popen(
                argv,
                cwd=tree,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                **sandbox.popen_options(),
            )
        except (FileNotFoundError, PermissionError) as exc:
            raise ValidationFailed(f"validation command not found: {command}") from exc
        try:
            returncode = process.wait(timeout=limits.seconds)
        except subprocess.TimeoutExpired as exc:
            _kill_group(process)
            raise ValidationFailed(
                f"`{command}` took longer than the sandbox allows ({limits.seconds:.0f}s)"
            ) from exc
        if returncode == 0:
            return
        output.seek(max(0, output.seek(0, os.SEEK_END) - OUTPUT_TAIL))
        said = output.read().decode("utf-8", "replace")
    lines = said.strip().splitlines()[-OUTPUT_LINES:]
    shown = redact("\n".join(lines), secrets)
    limit = limits.which_hit(returncode, said)
    why = f"failed ({limit})" if limit else f"failed (exit {returncode})"
    raise ValidationFailed(f"`{command}` {why}:\n{shown}")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
