"""Where the repository's `validate` command runs: away from every secret, within limits.

The command is the repository's code. A minimal environment is not containment: a script
running as the worker's user can read `/proc/PPID/environ` up the process tree and any key
file the worker can read. So by default it runs under bubblewrap (`bwrap`): new user, PID,
IPC, UTS and network namespaces and a fresh `/proc` (no ancestor to read), no
capabilities, a filesystem of `/usr` (and the usual links into it), a few files of `/etc`,
a private `/tmp` of a bounded size, a copy of the changed tree and nothing else.

And it runs within limits, so a script cannot take the worker's host down with it: a number
of processes (RLIMIT_NPROC), an address space (RLIMIT_AS), a largest file (RLIMIT_FSIZE), the
size of its `/tmp`, and a wall-clock time. A worker running as root runs the command as
`nobody` (root is not held to a number of processes, and needs no rights in there).
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from config.errors import ValidationFailed
from config.settings import Settings

SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
SANDBOX_TMP = "/tmp"  # noqa: S108 - a tmpfs of the sandbox's own, which it is also HOME in
NOBODY = 65534
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
MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What the validate command may use (RELEASEGATE_VALIDATE_MAX_*)."""

    processes: int = 256
    memory_mb: int = 4096  # address space: Go binaries such as kubectl reserve a lot of it
    file_mb: int = 256
    tmp_mb: int = 512
    seconds: float = 300

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            processes=settings.validate_max_processes,
            memory_mb=settings.validate_max_memory_mb,
            file_mb=settings.validate_max_file_mb,
            tmp_mb=settings.validate_tmp_mb,
            seconds=settings.validate_timeout,
        )

    def apply(self) -> None:
        """Set the limits on this process (a child about to exec the sandbox)."""
        for which, value in (
            (resource.RLIMIT_NPROC, self.processes),
            (resource.RLIMIT_AS, self.memory_mb * MIB),
            (resource.RLIMIT_FSIZE, self.file_mb * MIB),
        ):
            resource.setrlimit(which, (value, value))

    def which_hit(self, returncode: int, output: str) -> str | None:
        """The limit a failed run ran into, as a person reads it, if one can tell."""
        if returncode in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ) or "File too large" in output:
            return f"it wrote a file larger than the sandbox allows ({self.file_mb} MiB)"
        if "No space left on device" in output:
            return f"it filled the sandbox's /tmp ({self.tmp_mb} MiB)"
        if any(
            w in output for w in ("Resource temporarily unavailable", "fork: retry", "Cannot fork")
        ):
            return f"it started more processes than the sandbox allows ({self.processes})"
        if (
            "MemoryError" in output
            or "Cannot allocate memory" in output
            or "out of memory" in output
        ):
            return f"it used more memory than the sandbox allows ({self.memory_mb} MiB)"
        return None


@dataclass(frozen=True)
class Sandbox:
    """Where the repository's code runs: `bwrap` (the default) or `none` (beside the worker's
    secrets; only where the operator chose it)."""

    kind: str = "bwrap"
    readonly: tuple[Path, ...] = ()  # more read-only paths for validators outside /usr
    network: bool = False  # the environment's validate_network
    limits: Limits = Limits()

    def with_network(self, network: bool) -> Sandbox:
        return replace(self, network=network)

    @property
    def as_nobody(self) -> bool:
        """Whether the command runs as `nobody`: in the sandbox, when the worker is root."""
        return self.kind != "none" and os.geteuid() == 0

    def prepare(self, tree: Path) -> None:
        """Hand `tree` (the command's copy) to the user the command runs as."""
        if not self.as_nobody:
            return
        os.chown(tree, NOBODY, NOBODY)
        for folder, dirs, files in os.walk(tree):
            for name in [*dirs, *files]:
                os.chown(os.path.join(folder, name), NOBODY, NOBODY, follow_symlinks=False)

    def popen_options(self) -> dict[str, Any]:
        """How `subprocess.Popen` starts the sandbox: a session of its own (a timeout ends
        every process of it), as `nobody` where the worker is root, and within the limits
        (set in the child before it execs, after it became that user)."""
        user = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if self.as_nobody else {}
        return {"start_new_session": True, "preexec_fn": self.limits.apply, **user}

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
            "--size",
            str(self.limits.tmp_mb * MIB),
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
