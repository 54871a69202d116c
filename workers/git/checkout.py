"""A worker's warm clone of the GitOps repository: fetch, edit, commit, push.

Each worker process takes a slot (`workdir/<repo>/<host>/slot-N`, held with a
file lock for as long as it works there: it holds the slot) and keeps that slot's clone warm:
a job fetches and hard-resets instead of cloning again. A first clone is
blobless where the remote allows it, so a large repository is ready in
seconds. The host name in the path keeps replicas that share a persistent
volume out of each other's folders.

Every Git call is bounded by a timeout. User text never reaches a Git
option: paths come from the policy, are passed after `--` and read as
literal paths (`GIT_LITERAL_PATHSPECS`), messages go through a file, and a
path with a symbolic link or `.git` on it is refused.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import git

from config.errors import GitOpsError, PinError, PinNotFound, PushRejected, RemoteUnreachable
from config.git_access import GitAccess
from config.policy import Repository
from workers.git.commits import PlannedCommits
from workers.git.env import git_env, git_said, redact_url, repository_dir
from workers.git.history import FetchedHistory
from workers.git.integrity import slot_problem, store_problem
from workers.git.run import GitTimedOut, run_git, verb
from workers.git.signing import Signer
from workers.git.slots import STALE_HOST_SECONDS, hold_slot, prune_gone_hosts

log = logging.getLogger(__name__)

GIT_TIMEOUT = 120  # seconds for any network operation
SMALL_BLOB = "1m"  # files up to this size come with the fetch that changed them


def _remote_said(lines: list[str], keep: int = 5) -> str:
    """What the remote's hooks printed (a protected branch, a policy), as a message's tail."""
    said = [line.removeprefix("remote:").strip() for line in lines if line.startswith("remote:")]
    said = [line[:200] for line in said if line][-keep:]
    return (": " + " / ".join(said)) if said else ""


def _git_error(exc: git.GitCommandError) -> str:
    stderr = (exc.stderr or "").strip().removeprefix("stderr:").strip().strip("'").strip()
    return git_said(stderr) or str(exc.status)


def _folder(file: str) -> str:
    return file.rpartition("/")[0]


class Checkout(FetchedHistory, PlannedCommits):
    """A working clone of one repository branch, in a slot this process holds."""

    def __init__(
        self,
        repository: Repository,
        workdir: Path,
        *,
        access: GitAccess | None = None,
        host: str | None = None,
        paths: Sequence[str] | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.repository = repository
        self.signer = signer  # signs every commit when set
        # Check out only these files (the pinned ones) where nothing needs the whole tree.
        self.paths = sorted(set(paths)) if paths is not None else None
        self.base = repository_dir(repository, workdir) / (host or socket.gethostname())
        self.path: Path = self.base / "slot-unheld"
        self._env = git_env(access)
        self._known_hosts = str((access or GitAccess()).known_hosts_file)
        self._repo: git.Repo | None = None
        self._held = False  # this process holds a slot through this object
        # The commits made here and not yet known pushed: commit -> (path -> planned blob).
        self.planned: dict[str, dict[str, str]] = {}

    @property
    def remote_ref(self) -> str:
        return f"origin/{self.repository.branch}"

    def prune_gone_hosts(self, older_than: float = STALE_HOST_SECONDS) -> list[Path]:
        """Remove the clones of hosts (pods) that have not used them for `older_than` seconds:
        a persistent cache outlives the pods that filled it."""
        return prune_gone_hosts(self.base, older_than)

    @contextmanager
    def in_slot(self) -> Iterator[Checkout]:
        """Hold a slot for this process; closes GitPython's handles on exit. Nested use keeps
        the slot already held (a second slot would leave `path` pointing at one let go)."""
        if self._held:
            yield self
            return
        with hold_slot(self.base) as path:
            self.path, self._held = path, True
            try:
                yield self
            finally:
                self._held = False
                if self._repo is not None:
                    self._repo.close()
                    self._repo = None

    @property
    def repo(self) -> git.Repo:
        if self._repo is None:
            raise GitOpsError("the checkout is not synced; call sync() first")
        return self._repo

    @contextmanager
    def _holding_store(self) -> Iterator[Path]:
        """The host's shared object store, held while it is created or its refs fetched."""
        self.base.mkdir(parents=True, exist_ok=True)
        with open(self.base / "store.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self.base / "store.git"
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _git(
        self,
        *args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        strip: bool = True,
        given: str | None = None,
    ) -> str:
        """Run git (plain subprocess: cheaper than GitPython's reader threads, which counts on
        the deploy path), with `given` on its standard input; raises `RemoteUnreachable` with
        git's own words."""
        try:
            done = run_git(
                *args,
                cwd=cwd or self.base,
                env={**self._env, **(env or {})},
                given=given.encode() if given is not None else None,
                timeout=GIT_TIMEOUT,
            )
        except GitTimedOut as exc:
            raise RemoteUnreachable(str(exc)) from exc
        if done.returncode != 0:
            stderr = done.stderr.decode("utf-8", "replace")
            error = git_said(stderr, self._known_hosts) or f"exit {done.returncode}"
            raise RemoteUnreachable(f"git {verb(args)} failed: {error}")
        out = done.stdout.decode("utf-8", "replace")
        return out.strip() if strip else out

    def _open(self) -> git.Repo:
        """This slot's working tree: a worktree of the host's store (cloned once per host,
        so a second worker on the host is ready in the time a checkout takes)."""
        store = self.base / "store.git"
        if (store / "HEAD").exists() and store_problem(store):
            self._discard_store(store)
        if os.path.lexists(self.path / ".git"):
            problem = slot_problem(store, self.path)
            if problem is None:
                return git.Repo(self.path)
            log.warning(
                "the slot %s is not as releasegate left it (%s): made again", self.path, problem
            )
            shutil.rmtree(self.path, ignore_errors=True)
        url = self.repository.url
        with self._holding_store() as store:
            if not (store / "HEAD").exists():
                log.info("cloning %s into %s", redact_url(url), store)
                shutil.rmtree(store.with_suffix(".new"), ignore_errors=True)  # a crash's leftover
                self._git("init", "--quiet", "--bare", str(store.with_suffix(".new")))
                new = ["--git-dir", str(store.with_suffix(".new"))]
                self._git(*new, "config", "gc.auto", "0")  # shared by worktrees: never pruned
                self._git(*new, "remote", "add", "origin", "--", url)
                # Blobless where the remote serves filters (GitHub and GitLab do): history and
                # trees now, a file's content when a worktree first needs it. A remote that
                # refuses filters sends everything instead, and all works the same.
                self._git(*new, "config", "remote.origin.promisor", "true")
                self._git(*new, "config", "remote.origin.partialclonefilter", "blob:none")
                store.with_suffix(".new").rename(store)  # a store exists whole, or not at all
            if not (store / "refs" / "remotes" / "origin").is_dir():
                self._fetch_into(store, first=True)  # a first fetch that failed: again here
            if self.path.exists():
                shutil.rmtree(self.path)  # a worktree that died half-way
            for marker in (".clean", ".paths"):
                self.path.with_suffix(marker).unlink(missing_ok=True)
            self._git("--git-dir", str(store), "worktree", "prune")
        # Outside the store's lock: workers starting together check out side by side.
        log.info("adding the working tree %s", self.path)
        self._git(
            "--git-dir",
            str(store),
            "worktree",
            "add",
            "--quiet",
            "--detach",
            "--no-checkout",
            str(self.path),
            f"refs/remotes/{self.remote_ref}",
        )
        return git.Repo(self.path)

    def _discard_store(self, store: Path) -> None:
        """Move the host's clone aside and remove it (it is cloned again), when it holds what
        we did not write: checked again under its lock, another worker may have done it."""
        with self._holding_store():
            problem = store_problem(store) if (store / "HEAD").exists() else None
            if problem is None:
                return
            log.warning(
                "the clone %s is not as releasegate left it (%s): cloned again", store, problem
            )
            aside = store.with_name(f"store.discarded-{os.getpid()}-{time.time_ns()}")
            store.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)

    # What the slot's working tree is known to hold, kept beside it: each job is a new
    # process, and a clean tree with the right files needs neither a clean nor a re-checkout.

    @property
    def _dirty(self) -> bool:
        """True unless the tree is known to hold exactly a commit (our edits may be in it)."""
        return not self.path.with_suffix(".clean").exists()

    @_dirty.setter
    def _dirty(self, dirty: bool) -> None:
        marker = self.path.with_suffix(".clean")
        if dirty:
            marker.unlink(missing_ok=True)
        else:
            marker.touch()

    def _limit_checkout(self) -> None:
        """Keep only the pinned files' folders in the working tree and in the index (all of
        the tree when paths is None): with a sparse index of a hundred entries instead of
        thousands, a reset and a commit take milliseconds."""
        folders = None if self.paths is None else sorted({_folder(p) for p in self.paths} - {""})
        wanted = json.dumps({"cone": folders})
        applied = self.path.with_suffix(".paths")
        if applied.exists() and applied.read_text() == wanted:
            return
        applied.unlink(missing_ok=True)
        if folders is None:
            self._git("sparse-checkout", "disable", cwd=self.path)
        else:  # files at the top are always in a cone; folders are read from stdin, as given
            given = "".join(f"{folder}\n" for folder in folders)
            self._git(
                "sparse-checkout",
                "set",
                "--cone",
                "--sparse-index",
                "--stdin",
                cwd=self.path,
                given=given,
            )
        applied.write_text(wanted)

    def _fetch_into(self, store: Path, first: bool = False) -> None:
        """The branch's new commits. After the first (blobless) fetch, the small files they
        changed come along in the same fetch: the checkout would otherwise ask the remote for
        each changed pinned file on its own, a second round trip per deploy."""
        branch = self.repository.branch
        small = [] if first else [f"--filter=blob:limit={SMALL_BLOB}"]
        self._git(
            "--git-dir",
            str(store),
            "fetch",
            "--quiet",
            "--prune",
            "--no-tags",
            *small,
            "origin",
            f"+refs/heads/{branch}:refs/remotes/origin/{branch}",
        )

    def fetch(self) -> str:
        """Fetch the remote branch into the host's store; returns its head. The working tree
        is left alone."""
        branch, url = self.repository.branch, self.repository.url
        try:
            if self._repo is None:
                self._repo = self._open()
            with self._holding_store() as store:
                self._fetch_into(store)
            return self._git(
                "rev-parse", "--verify", f"{self.remote_ref}^{{commit}}", cwd=self.path
            )
        except (RemoteUnreachable, git.GitCommandError) as exc:
            why = _git_error(exc) if isinstance(exc, git.GitCommandError) else str(exc)
            raise RemoteUnreachable(f"cannot fetch {branch} from {redact_url(url)}: {why}") from exc

    def sync(self) -> str:
        """Bring the working tree to the remote branch's head, discarding local changes."""
        head = self.fetch()
        self.reset_to(head)
        return head

    def reset_to(self, commit: str) -> None:
        """Make the branch and working tree exactly `commit` (drops uncommitted edits)."""
        self._limit_checkout()  # the pinned files may have changed with the policy
        dirty = self._dirty
        self._dirty = True  # until the reset below is done
        # The slot works on a detached HEAD: worktrees of one store cannot share a branch,
        # and we push HEAD to the remote branch by name anyway.
        self._git("reset", "--quiet", "--hard", commit, "--", cwd=self.path)
        if dirty:
            self._git("clean", "-fdxq", cwd=self.path)  # only our edits or a crash leave strays
        self._dirty = False

    def read(self, file: str) -> str:
        path = self._inside(file)
        try:
            with open(path, encoding="utf-8", newline="") as handle:
                return handle.read()
        except FileNotFoundError as exc:
            raise PinNotFound(f"{file} does not exist in the repository") from exc
        except IsADirectoryError as exc:
            raise PinError(f"{file} is a directory, not a file") from exc
        except UnicodeDecodeError as exc:
            raise PinError(f"{file} is not UTF-8 text") from exc

    def write(self, file: str, text: str) -> None:
        self._dirty = True
        with open(self._inside(file), "w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    def _inside(self, file: str) -> Path:
        """The real path of a pinned file; refuses `.git` and symbolic links on the way."""
        parts = [p for p in file.split("/") if p not in ("", ".")]
        if not parts or any(p == ".." or p.lower() == ".git" for p in parts):
            raise PinNotFound(f"{file} is outside the repository")
        path = self.path
        for depth, part in enumerate(parts):
            path = path / part
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                return path  # missing: reading says so; nothing is written to new files
            if stat.S_ISLNK(mode):
                where = "/".join(parts[: depth + 1])
                raise PinError(f"{where} is a symbolic link; releasegate does not follow links")
        return path

    def head(self) -> str:
        return self._git("rev-parse", "--verify", "HEAD", cwd=self.path)

    def push_branch(self, branch: str) -> None:
        """Push HEAD to `branch` (a request's own branch, replaced if it exists)."""
        self._git(
            "push", "--quiet", "--force", "origin", f"HEAD:refs/heads/{branch}", cwd=Path(self.path)
        )

    def push(self) -> None:
        """Push the local branch; raises `PushRejected` for a lost race or a refusal. A plain
        `git push --porcelain` (no progress read by threads): this is the deploy path's
        longest step."""
        branch = self.repository.branch
        try:
            done = run_git(
                "push",
                "--porcelain",
                "origin",
                f"HEAD:refs/heads/{branch}",
                cwd=Path(self.path),
                env=self._env,
                timeout=GIT_TIMEOUT,
            )
        except GitTimedOut as exc:
            raise RemoteUnreachable(f"cannot push to {branch}: {exc}") from exc
        out = done.stdout.decode("utf-8", "replace")
        err = done.stderr.decode("utf-8", "replace")
        refs = [line.split("\t") for line in out.splitlines() if "\t" in line]
        if not refs:
            said = git_said(err, self._known_hosts) or f"exit {done.returncode}"
            raise RemoteUnreachable(f"cannot push to {branch}: {said}")
        for flag, *_ref, summary in refs:
            if flag == "!" or done.returncode != 0:
                said = _remote_said(err.splitlines())
                raise PushRejected(f"push to {branch} rejected: {summary.strip()}{said}")
        self.planned.clear()

    def discard(self) -> None:
        """Throw this slot's working tree away (it is made again at the next sync): after
        something we did not do was found in it."""
        if self._repo is not None:
            self._repo.close()
            self._repo = None
        self.planned.clear()
        shutil.rmtree(self.path, ignore_errors=True)
        for marker in (".clean", ".paths"):
            self.path.with_suffix(marker).unlink(missing_ok=True)

    def landed(self, commit: str) -> bool:
        """After a push that errored: did `commit` reach the remote branch all the same?"""
        self.fetch()
        try:
            self.repo.git.merge_base("--is-ancestor", commit, self.remote_ref)
        except git.GitCommandError:
            return False
        return True
