"""Reading the GitOps repository without a working tree: what the bot answers from.

The bot keeps a bare clone (`Mirror`) and reads Git objects at a commit it
has already fetched (`Snapshot`). Fetches are single-flight: whoever finds
the last fetch older than the freshness bound starts one, everyone else
joins it for a short while and otherwise answers from the commit already
there, saying how old it is. Blobs and trees come from one long-lived
`git cat-file --batch` process and are cached by object id; history is
cached by head commit. Nothing here takes a lock while the remote is slow.

A path is resolved tree by tree, so a symbolic link, a submodule or a
`.git` component anywhere on it is refused rather than followed.
"""

from __future__ import annotations

import fcntl
import logging
import re
import subprocess
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast

from config.errors import GitOpsError, PinError, PinNotFound, RemoteUnreachable
from config.git_access import GitAccess
from config.policy import Repository
from workers.git.env import git_env, git_said, redact_url, repository_dir
from workers.git.run import run_git, start_git
from workers.git.trailers import TRAILER_FORMAT, parse_trailer_log

log = logging.getLogger(__name__)

_HEX = re.compile(r"[0-9a-f]{7,64}")
T = TypeVar("T")

FETCH_TIMEOUT = 30.0  # seconds a fetch may take before it is abandoned
FRESHNESS = 3.0  # seconds a fetched head serves readers without a new fetch
JOIN_WAIT = 1.5  # seconds a reader waits for a running fetch before reading the older head
CACHE_BYTES = 64 * 1024 * 1024

MODE_TREE, MODE_LINK, MODE_GITLINK = "40000", "120000", "160000"


class ObjectReader:
    """One `git cat-file --batch` process for a repository, objects cached by id."""

    def __init__(self, git_dir: Path, cache_bytes: int = CACHE_BYTES) -> None:
        self.git_dir = git_dir
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._cache: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._cached_bytes = 0
        self._cache_bytes = cache_bytes

    def _start(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            self._process = start_git("--git-dir", str(self.git_dir), "cat-file", "--batch")
            # A store dropped without close() does not leave its process behind.
            weakref.finalize(self, _stop, self._process)
        return self._process

    def get(self, name: str) -> tuple[str, bytes] | None:
        """(type, content) of the object `name` (an id or `rev:path`), or None if missing."""
        if "\n" in name:
            raise GitOpsError("an object name cannot contain a newline")
        with self._lock:  # one reader of the pipe at a time; cache hits take microseconds
            if cached := self._cache.get(name):
                self._cache.move_to_end(name)
                return cached
            found = self._read(name)
            if found is not None and _is_object_id(name):
                self._remember(name, found)
        return found

    def _read(self, name: str) -> tuple[str, bytes] | None:
        process = self._start()
        if process.stdin is None or process.stdout is None:
            raise GitOpsError("git cat-file has no pipes")
        try:
            process.stdin.write(name.encode() + b"\n")
            process.stdin.flush()
            header = process.stdout.readline().decode().split()
            if len(header) != 3:  # "<name> missing" (or "ambiguous")
                return None
            _oid, kind, size = header
            data = process.stdout.read(int(size))
            process.stdout.read(1)  # the newline after the content
        except (OSError, ValueError) as exc:
            process.kill()
            self._process = None
            raise GitOpsError(f"reading Git objects failed: {exc}") from exc
        return kind, data

    def _remember(self, oid: str, found: tuple[str, bytes]) -> None:
        self._cache[oid] = found
        self._cached_bytes += len(found[1])
        while self._cached_bytes > self._cache_bytes and self._cache:
            _oid, (_kind, data) = self._cache.popitem(last=False)
            self._cached_bytes -= len(data)

    def close(self) -> None:
        with self._lock:
            if self._process is not None:
                self._process.kill()
                self._process.wait()
                self._process = None


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def _is_object_id(name: str) -> bool:
    return len(name) in (40, 64) and all(c in "0123456789abcdef" for c in name)


def parse_tree(data: bytes) -> dict[str, tuple[str, str]]:
    """A tree object's entries: name -> (mode, object id)."""
    entries: dict[str, tuple[str, str]] = {}
    at = 0
    while at < len(data):
        space = data.index(b" ", at)
        nul = data.index(b"\0", space)
        mode, name = data[at:space].decode(), data[space + 1 : nul].decode("utf-8", "replace")
        entries[name] = (mode, data[nul + 1 : nul + 21].hex())
        at = nul + 21
    return entries


@dataclass
class Snapshot:
    """The repository at one fetched commit, readable by many threads at once."""

    mirror: Mirror
    head: str
    fetched_at: float  # time.time() of the fetch that brought this head
    fetch_error: str | None = None  # why a newer head could not be fetched, if it could not
    _texts: dict[str, str] = field(default_factory=dict)

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.fetched_at)

    def staleness(self) -> str | None:
        """A note for answers read from an old head, or None when the head is fresh."""
        if self.fetch_error is None:
            return None
        minutes = self.age / 60
        age = f"{self.age:.0f}s" if minutes < 2 else f"{minutes:.0f} min"
        return f"the remote did not answer ({self.fetch_error}); this is Git as fetched {age} ago"

    def read(self, file: str) -> str:
        """The text of `file` at the head; raises `PinNotFound` where there is none."""
        if file not in self._texts:
            text = self.mirror.read_at(self.head, file)
            if text is None:
                raise PinNotFound(f"{file} does not exist in the repository")
            self._texts[file] = text
        return self._texts[file]

    def read_at(self, commit: str, file: str) -> str | None:
        return self.mirror.read_at(commit, file)

    def file_history(self, file: str, limit: int) -> list[tuple[str, int]]:
        return self.mirror.file_history(self.head, file, limit)

    def log_with_trailers(self, files: list[str], limit: int) -> list[dict[str, str]]:
        return self.mirror.log_with_trailers(self.head, files, limit)

    def memo(self, key: tuple[Hashable, ...], compute: Callable[[], T]) -> T:
        """`compute()`, remembered for this head (what Git says at a commit never changes)."""
        return cast(T, self.mirror.cached((self.head, *key), compute))


class Mirror:
    """A bare clone of the repository's branch, fetched on demand, read through `Snapshot`s."""

    def __init__(
        self,
        repository: Repository,
        workdir: Path,
        *,
        access: GitAccess | None = None,
        freshness: float = FRESHNESS,
        fetch_timeout: float = FETCH_TIMEOUT,
        join_wait: float = JOIN_WAIT,
        pushed: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.repository = repository
        # The commit our workers pushed last: when it changes, the head is stale at once.
        self.pushed = pushed
        self._pushed_done: str | None = None
        self.git_dir = repository_dir(repository, workdir) / "mirror.git"
        self.freshness = freshness
        self.fetch_timeout = fetch_timeout
        self.join_wait = join_wait
        self._env = git_env(access)
        self._known_hosts = str((access or GitAccess()).known_hosts_file)
        self.objects = ObjectReader(self.git_dir)
        self._cond = threading.Condition()
        self._fetching = False
        self._snapshot: Snapshot | None = None
        self._done_at = -FRESHNESS * 1000
        self._error: str | None = None
        self._history: OrderedDict[tuple[Hashable, ...], object] = OrderedDict()
        self._history_lock = threading.Lock()

    @property
    def ref(self) -> str:
        return f"refs/remotes/origin/{self.repository.branch}"

    # Fetching: single flight, bounded, never blocking readers for long.

    def has_head(self) -> bool:
        """Whether a first fetch brought a head: until then, nothing can be answered from Git.
        Asking starts that fetch in the background if none runs (it never waits for it)."""
        with self._cond:
            if self._snapshot is None and not self._fetching:
                self._fetching = True
                threading.Thread(
                    target=self._fetch,
                    args=(time.monotonic(), self._pushed_done),
                    name="git-fetch",
                    daemon=True,
                ).start()
            return self._snapshot is not None

    def snapshot(self) -> Snapshot:
        """The newest head this process can offer now (fetching first if it is stale)."""
        pushed = self._pushed_now()
        with self._cond:
            now = time.monotonic()
            current = self._snapshot
            if (
                current is not None
                and not self._fetching
                and now - self._done_at < self.freshness
                and pushed == self._pushed_done
            ):
                return current
            if not self._fetching:
                self._fetching = True
                threading.Thread(
                    target=self._fetch, args=(now, pushed), name="git-fetch", daemon=True
                ).start()
            # Join the running fetch briefly; with nothing fetched yet, wait for it whole.
            wait = self.join_wait if current is not None else self.fetch_timeout + 5
            self._cond.wait_for(lambda: not self._fetching, timeout=wait)
            if self._snapshot is None:
                raise RemoteUnreachable(
                    f"cannot fetch {self.repository.branch} from "
                    f"{redact_url(self.repository.url)}: {self._error or 'timed out'}"
                )
            if self._fetching and self._snapshot is current:
                return Snapshot(self, current.head, current.fetched_at, "still fetching")
            return self._snapshot

    def _pushed_now(self) -> str | None:
        try:
            return self.pushed()
        except Exception as exc:  # Redis away: fall back to the freshness bound alone
            log.warning("cannot tell what was pushed last: %s", exc)
            return self._pushed_done

    def _fetch(self, started: float, pushed: str | None) -> None:
        head, error = None, None
        try:
            head = self._fetch_head()
        except GitOpsError as exc:
            error = str(exc)
            log.warning("fetch failed: %s", exc)
        with self._cond:
            self._fetching = False
            self._done_at, self._pushed_done = started, pushed  # what this fetch can vouch for
            self._error = error
            if head is not None:
                self._snapshot = Snapshot(self, head, time.time())
            elif self._snapshot is not None:
                old = self._snapshot
                self._snapshot = Snapshot(self, old.head, old.fetched_at, error)
            self._cond.notify_all()

    def _git(self, *args: str, timeout: float) -> str:
        done = run_git("--git-dir", str(self.git_dir), *args, env=self._env, timeout=timeout)
        if done.returncode != 0:
            stderr = done.stderr.decode("utf-8", "replace")
            raise GitOpsError(git_said(stderr, self._known_hosts) or f"exit {done.returncode}")
        return done.stdout.decode("utf-8", "replace")

    def log(self, *args: str, timeout: float = 120) -> str:
        """`git log ARGS` of the branch as last fetched: records read in bulk."""
        return self._git("log", *args, self.ref, "--", timeout=timeout)

    def is_ancestor(self, commit: str, later: str) -> bool:
        """Whether `later` is `commit` or comes after it on the branch (fetching once when
        `later` is not known here yet). Both come from outside (a reconciler's answer):
        anything but a hex object name is simply not an ancestor."""
        if not (_HEX.fullmatch(commit) and _HEX.fullmatch(later)):
            return False
        for attempt in range(2):
            try:
                self._git("merge-base", "--is-ancestor", commit, later, timeout=10)
                return True
            except GitOpsError:
                if attempt == 0:
                    self.snapshot()
        return False

    def _fetch_head(self) -> str:
        try:
            self.git_dir.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GitOpsError(f"cannot create {self.git_dir.parent}: {exc.strerror}") from exc
        # Processes sharing a work directory (the demo's shell, check-config) fetch in turn.
        with open(self.git_dir.parent / "mirror.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (self.git_dir / "HEAD").exists():
                log.info("cloning %s (bare)", redact_url(self.repository.url))
                made = run_git(
                    "init", "--quiet", "--bare", str(self.git_dir), env=self._env, timeout=30
                )
                if made.returncode != 0:
                    said = git_said(made.stderr.decode("utf-8", "replace"))
                    raise GitOpsError(f"cannot create {self.git_dir}: {said}")
                self._git("remote", "add", "origin", "--", self.repository.url, timeout=10)
            branch = self.repository.branch
            try:
                refspec = f"+refs/heads/{branch}:{self.ref}"
                self._git(
                    "fetch",
                    "--quiet",
                    "--prune",
                    "--no-tags",
                    "origin",
                    refspec,
                    timeout=self.fetch_timeout,
                )
            except GitOpsError as exc:
                raise RemoteUnreachable(str(exc)) from exc
            return self._git("rev-parse", "--verify", f"{self.ref}^{{commit}}", timeout=10).strip()

    # Reading objects at a commit.

    def _object(self, name: str, kind: str) -> bytes | None:
        found = self.objects.get(name)
        if found is None or found[0] != kind:
            return None
        return found[1]

    def entry(self, commit: str, file: str) -> tuple[str, str] | None:
        """(mode, object id) of `file` at `commit`; refuses links, submodules and `.git`."""
        data = self._object(commit, "commit")
        if data is None:
            raise GitOpsError(f"commit {commit[:12]} is not in the local clone")
        tree = data.split(b"\n", 1)[0].removeprefix(b"tree ").decode()
        parts = [p for p in file.split("/") if p not in ("", ".")]
        if not parts or any(p == ".." or p.lower() == ".git" for p in parts):
            raise PinNotFound(f"{file} is outside the repository")
        mode = MODE_TREE
        for depth, part in enumerate(parts):
            if mode != MODE_TREE:
                return None
            listing = self._object(tree, "tree")
            if listing is None:
                return None
            found = parse_tree(listing).get(part)
            if found is None:
                return None
            mode, tree = found
            if mode == MODE_LINK:
                where = "/".join(parts[: depth + 1])
                raise PinError(f"{where} is a symbolic link; releasegate does not follow links")
            if mode == MODE_GITLINK:
                raise PinError(f"{'/'.join(parts[: depth + 1])} is a submodule, not a file")
        return mode, tree

    def read_at(self, commit: str, file: str) -> str | None:
        """The text of `file` at `commit`, or None where it does not exist."""
        found = self.entry(commit, file)
        if found is None:
            return None
        mode, oid = found
        if mode == MODE_TREE:
            raise PinError(f"{file} is a directory, not a file")
        data = self._object(oid, "blob")
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PinError(f"{file} is not UTF-8 text") from exc

    def cached(self, key: tuple[Hashable, ...], compute: Callable[[], object]) -> object:
        with self._history_lock:
            if key in self._history:
                self._history.move_to_end(key)
                return self._history[key]
        value = compute()
        with self._history_lock:
            self._history[key] = value
            while len(self._history) > 512:
                self._history.popitem(last=False)
        return value

    def file_history(self, commit: str, file: str, limit: int) -> list[tuple[str, int]]:
        """(commit, commit time) of the last `limit` commits up to `commit` touching `file`."""

        def compute() -> list[tuple[str, int]]:
            out = self._git(
                "log",
                "--format=%H %ct",
                f"--max-count={limit}",
                commit,
                "--",
                file,
                timeout=self.fetch_timeout,
            )
            return [(sha, int(ts)) for sha, ts in (line.split() for line in out.splitlines())]

        return cast(list[tuple[str, int]], self.cached(("history", commit, file, limit), compute))

    def log_with_trailers(self, commit: str, files: list[str], limit: int) -> list[dict[str, str]]:
        def compute() -> list[dict[str, str]]:
            out = self._git(
                "log",
                f"--format={TRAILER_FORMAT}",
                f"--max-count={limit}",
                commit,
                "--",
                *files,
                timeout=self.fetch_timeout,
            )
            return parse_trailer_log(out)

        key = ("trailers", commit, tuple(files), limit)
        return cast(list[dict[str, str]], self.cached(key, compute))

    def close(self) -> None:
        self.objects.close()
