"""A warm clone of the GitOps repository: fetch, read, edit, commit, push.

Each process keeps its clone under the work directory and reuses it: a job
fetches and hard-resets instead of cloning again. A file lock serialises
processes that share a clone. Every Git call is bounded by a timeout, and
user text never reaches a Git option: paths come from the policy and are
passed after `--`, messages go through a file.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shlex
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import git

from config.errors import GitOpsError, PinNotFound, PushRejected, RemoteUnreachable
from config.policy import Repository

log = logging.getLogger(__name__)

GIT_TIMEOUT = 120  # seconds for any network operation
_FAILED_PUSH = (
    git.PushInfo.ERROR
    | git.PushInfo.REJECTED
    | git.PushInfo.REMOTE_REJECTED
    | git.PushInfo.REMOTE_FAILURE
)


def redact_url(url: str) -> str:
    """The URL without any user:password part, fit for logs and chat."""
    return re.sub(r"//[^/@]+@", "//***@", url)


def _git_error(exc: git.GitCommandError) -> str:
    stderr = (exc.stderr or "").strip().removeprefix("stderr:").strip().strip("'").strip()
    return redact_url(stderr or str(exc.status))


class Checkout:
    """A working clone of one repository branch, owned by one process at a time."""

    def __init__(
        self,
        repository: Repository,
        workdir: Path,
        *,
        name: str = "worker",
        ssh_key: Path | None = None,
    ) -> None:
        self.repository = repository
        slug = hashlib.sha256(repository.url.encode()).hexdigest()[:12]
        self.path = workdir / slug / name
        self._env = {"GIT_TERMINAL_PROMPT": "0"}
        if ssh_key is not None:
            self._env["GIT_SSH_COMMAND"] = (
                f"ssh -i {shlex.quote(str(ssh_key))} -o IdentitiesOnly=yes "
                "-o StrictHostKeyChecking=accept-new"
            )
        self._repo: git.Repo | None = None

    @property
    def remote_ref(self) -> str:
        return f"origin/{self.repository.branch}"

    @contextmanager
    def locked(self) -> Iterator[Checkout]:
        """Hold the clone for this process; closes GitPython's handles on exit."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / f"{self.path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self
            finally:
                if self._repo is not None:
                    self._repo.close()
                    self._repo = None
                fcntl.flock(lock, fcntl.LOCK_UN)

    @property
    def repo(self) -> git.Repo:
        if self._repo is None:
            raise GitOpsError("the checkout is not synced; call sync() first")
        return self._repo

    def sync(self) -> str:
        """Bring the clone to the remote branch's head, discarding local changes."""
        branch = self.repository.branch
        url = self.repository.url
        try:
            if not (self.path / ".git").is_dir():
                log.info("cloning %s into %s", redact_url(url), self.path)
                self._repo = git.Repo.clone_from(
                    url, self.path, branch=branch, env=self._env, kill_after_timeout=GIT_TIMEOUT
                )
            elif self._repo is None:
                self._repo = git.Repo(self.path)
            repo = self._repo
            with repo.git.custom_environment(**self._env):
                repo.git.fetch(
                    "--prune", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}",
                    kill_after_timeout=GIT_TIMEOUT,
                )  # fmt: skip
            repo.git.checkout("-B", branch, self.remote_ref, "--")
            repo.git.reset("--hard", self.remote_ref, "--")
            repo.git.clean("-fdx")
            return str(repo.head.commit.hexsha)
        except git.GitCommandError as exc:
            raise RemoteUnreachable(
                f"cannot fetch {branch} from {redact_url(url)}: {_git_error(exc)}"
            ) from exc

    def read(self, file: str) -> str:
        path = self._inside(file)
        try:
            with open(path, encoding="utf-8", newline="") as handle:
                return handle.read()
        except FileNotFoundError as exc:
            raise PinNotFound(f"{file} does not exist in the repository") from exc

    def write(self, file: str, text: str) -> None:
        with open(self._inside(file), "w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    def _inside(self, file: str) -> Path:
        path = (self.path / file).resolve()
        if not path.is_relative_to(self.path.resolve()) or ".git" in Path(file).parts:
            raise PinNotFound(f"{file} is outside the repository")
        return path

    def commit(self, message: str, files: list[str]) -> str:
        name, email = self.repository.author[:-1].split(" <", 1)
        env = {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }
        repo = self.repo
        repo.git.add("--", *files)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=repo.git_dir, delete=False
        ) as f:
            f.write(message)
        try:
            with repo.git.custom_environment(**env):
                repo.git.commit("--no-verify", "--cleanup=verbatim", f"--file={f.name}")
        finally:
            os.unlink(f.name)
        return str(repo.head.commit.hexsha)

    def push(self) -> None:
        branch = self.repository.branch
        try:
            with self.repo.git.custom_environment(**self._env):
                infos = self.repo.remote("origin").push(
                    f"HEAD:refs/heads/{branch}", kill_after_timeout=GIT_TIMEOUT
                )
        except git.GitCommandError as exc:
            raise RemoteUnreachable(f"cannot push to {branch}: {_git_error(exc)}") from exc
        if not infos:
            raise RemoteUnreachable(f"cannot push to {branch}: the remote did not answer")
        for info in infos:
            if info.flags & _FAILED_PUSH:
                raise PushRejected(f"push to {branch} rejected: {info.summary.strip()}")

    def find_request_commit(self, request_id: str, since: datetime) -> str | None:
        """The commit on the remote branch that carries this request id's trailer, if any."""
        out = self.repo.git.log(
            self.remote_ref,
            "--format=%H",
            "--max-count=1",
            f"--since={(since - timedelta(days=1)).isoformat()}",
            f"--grep=^Releasegate-Request: {re.escape(request_id)}$",
            "--",
        )
        return out.strip() or None


@contextmanager
def snapshot(checkout: Checkout) -> Iterator[tuple[str, Checkout]]:
    """Fetch and hold the clone for reading: yields the remote head and the checkout."""
    with checkout.locked():
        head = checkout.sync()
        yield head, checkout


def file_history(checkout: Checkout, file: str, limit: int) -> list[tuple[str, int]]:
    """(commit, commit time) of the last `limit` commits on the remote branch touching `file`."""
    out = checkout.repo.git.log(
        checkout.remote_ref, "--format=%H %ct", f"--max-count={limit}", "--", file
    )
    return [(sha, int(ts)) for sha, ts in (line.split() for line in out.splitlines())]


def read_at(checkout: Checkout, commit: str, file: str) -> str | None:
    """The file's exact text at `commit`, or None where it did not exist."""
    try:
        blob = checkout.repo.commit(commit).tree / file
    except KeyError:
        return None
    data: bytes = blob.data_stream.read()
    return data.decode("utf-8", errors="replace")


_FIELD, _RECORD = "\x1f", "\x1e"
_TRAILERS = ("Releasegate-Request", "Requested-by", "Approved-by", "Releasegate-Kind")


def log_with_trailers(checkout: Checkout, files: list[str], limit: int) -> list[dict[str, str]]:
    """The last commits touching `files`, newest first, with releasegate's trailers."""
    trailer_fields = _FIELD.join(
        f"%(trailers:key={key},valueonly,separator=%x2C)" for key in _TRAILERS
    )
    fmt = _FIELD.join(["%H", "%ct", "%an", "%s", trailer_fields]) + _RECORD
    out = checkout.repo.git.log(
        checkout.remote_ref, f"--format={fmt}", f"--max-count={limit}", "--", *files
    )
    entries = []
    for record in out.split(_RECORD):
        if record.strip():
            values = record.strip("\n").split(_FIELD)
            entries.append(
                dict(zip(("commit", "time", "author", "subject", *_TRAILERS), values, strict=True))
            )
    return entries
