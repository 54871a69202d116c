"""The environment's validation command, run in the changed tree before a commit.

It is the repository's code, so it runs where no secret is. A minimal environment is not
containment: a script running as the worker's user can read `/proc/PPID/environ` up the
process tree and any key file the worker can read. So by default the command runs under
bubblewrap (`bwrap`): new user, PID, IPC, UTS and network namespaces and a fresh `/proc`
(no ancestor to read), no capabilities, a filesystem of `/usr` (and the usual links into
it), a few files of `/etc`, a private `/tmp`, the changed tree (read-write) and nothing
else; the environment is cleared to PATH, HOME, LANG and the names the environment lists
under `validate_env`. Without bubblewrap the worker refuses to run the command, unless the
operator says `RELEASEGATE_VALIDATE_SANDBOX=none`.

Whatever the sandbox, the command has a timeout, and every secret value this process knows
is blanked out of its output before it reaches chat, audit or logs.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from config.errors import ValidationFailed

VALIDATION_TIMEOUT = 300
OUTPUT_LINES = 20
BASE_ENV = ("PATH", "LANG")
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
SANDBOX_TMP = "/tmp"  # noqa: S108 - a tmpfs of the sandbox's own, which it is also HOME in
# Top-level links into /usr on merged-/usr systems, or folders where /usr is not merged.
SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What of /etc a validator may need (users, name resolution, CA certificates, the
# alternatives many commands are links through); nothing else of it.
ETC = (
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/resolv.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/alternatives",
    "/etc/ld.so.cache",
)


@dataclass(frozen=True)
class Sandbox:
    """Where the repository's code runs: `bwrap` (the default) or `none` (beside the worker's
    secrets; only where the operator chose it)."""

    kind: str = "bwrap"
    readonly: tuple[Path, ...] = ()  # more read-only paths for validators outside /usr
    network: bool = False  # the environment's validate_network

    def with_network(self, network: bool) -> Sandbox:
        return Sandbox(self.kind, self.readonly, network)

    def argv(self, command: Sequence[str], tree: Path) -> list[str]:
        if self.kind == "none":
            return list(command)
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise ValidationFailed(
                "the validate command runs in a sandbox (bubblewrap), which is not installed "
                "on this worker: install bubblewrap, or set RELEASEGATE_VALIDATE_SANDBOX=none "
                "to run the repository's code beside the worker's secrets (not recommended)"
            )
        # A private /proc (no ancestor to read), /dev and /tmp first; what is bound below
        # shows through them, and nothing else does.
        args = [
            bwrap,
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            SANDBOX_TMP,
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        for path in [*ETC, *(str(p) for p in self.readonly)]:
            if os.path.exists(path):
                args += ["--ro-bind", path, path]
        args += ["--bind", str(tree), str(tree), "--chdir", str(tree)]
        if self.network:
            args.append("--share-net")
        return [*args, "--", *command]


@contextmanager
def validation_copy(tree: Path) -> Iterator[Path]:
    """A copy of `tree` without its `.git`, beside it, removed after the block: the validator
    works there, so nothing it writes (a planted `.git`, a rewritten pin) reaches the clone
    the commit is made in."""
    with tempfile.TemporaryDirectory(dir=tree.parent, prefix=f"{tree.name}.validate-") as folder:
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
    timeout: float = VALIDATION_TIMEOUT,
) -> None:
    """Run `command` in `tree`; raise `ValidationFailed` with its (redacted) output."""
    secrets = list(secrets)
    sandbox = sandbox or Sandbox()
    env = minimal_env(allowed_env, sandbox.kind != "none")
    words = shlex.split(command)
    if "/" not in words[0] and shutil.which(words[0], path=env.get("PATH")) is None:
        raise ValidationFailed(f"validation command not found: {command}")
    argv = sandbox.argv(words, tree)
    try:
        done = subprocess.run(
            argv,
            cwd=tree,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
            env=env,
        )
    except (FileNotFoundError, PermissionError) as exc:
        raise ValidationFailed(f"validation command not found: {command}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ValidationFailed(f"`{command}` took longer than {timeout:.0f}s") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-OUTPUT_LINES:]
        shown = redact("\n".join(output), secrets)
        raise ValidationFailed(f"`{command}` failed (exit {done.returncode}):\n{shown}")
