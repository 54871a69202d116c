"""The bot's mirrors of every repository the policy names, read together as one `View`.

Each repository has its own bare `Mirror`, with its single-flight fetch and its
bounded freshness. A `View` fetches them side by side, so an answer that reads two
repositories waits for the slower fetch, not for the sum of both.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from config.git_access import GitAccess
from config.policy import Policy, Repository
from workers.git.mirror import FRESHNESS, Mirror, Snapshot

T = TypeVar("T")


def _nothing_pushed() -> str | None:
    return None


@dataclass(frozen=True)
class View:
    """Every repository at one fetched head each, readable by many threads at once."""

    snapshots: dict[str, Snapshot]  # in the policy's order

    def __getitem__(self, repository: str) -> Snapshot:
        return self.snapshots[repository]

    def __iter__(self) -> Iterator[str]:
        return iter(self.snapshots)

    def read(self, repository: str, file: str) -> str:
        """The text of `file` in `repository` at its head; raises `PinNotFound` where none."""
        return self.snapshots[repository].read(file)

    @property
    def head(self) -> str:
        """The first repository's head (the only one's, in a single-repository policy)."""
        return next(iter(self.snapshots.values())).head

    def heads(self) -> str:
        """Where each repository was read: `3f3fc76`, or `apps 3f3fc76, environments 9a1b2c3`."""
        if len(self.snapshots) == 1:
            return self.head[:7]
        return ", ".join(f"{name} {snap.head[:7]}" for name, snap in self.snapshots.items())

    def staleness(self) -> str | None:
        notes = [
            (f"{name}: {note}" if len(self.snapshots) > 1 else note)
            for name, snap in self.snapshots.items()
            if (note := snap.staleness())
        ]
        return "; ".join(notes) or None

    def memo(self, key: tuple[Hashable, ...], compute: Callable[[], T]) -> T:
        """`compute()`, remembered for these heads (what Git says at a commit never changes)."""
        heads = tuple(snap.head for snap in self.snapshots.values())
        return self.head_snapshot.memo((heads, *key), compute)

    @property
    def head_snapshot(self) -> Snapshot:
        return next(iter(self.snapshots.values()))


class Mirrors:
    """One `Mirror` per repository of the policy, in the policy's order."""

    def __init__(self, mirrors: dict[str, Mirror]) -> None:
        self.mirrors = mirrors
        self._pool = ThreadPoolExecutor(max(1, len(mirrors)), thread_name_prefix="fetch")

    @classmethod
    def of(
        cls,
        policy: Policy,
        workdir: Path,
        *,
        access: GitAccess | None = None,
        pushed: Callable[[Repository], Callable[[], str | None]] | None = None,
        freshness: float = FRESHNESS,
    ) -> Mirrors:
        """Mirrors of `policy`'s repositories, each reached with its own deploy key, each told
        what its push lane pushed last by `pushed`."""
        mirrors = {}
        for name, repo in policy.repositories.items():
            mirrors[name] = Mirror(
                repo,
                workdir,
                access=repo.access(access or GitAccess()),
                freshness=freshness,
                pushed=pushed(repo) if pushed else _nothing_pushed,
            )
        return cls(mirrors)

    def __getitem__(self, repository: str) -> Mirror:
        return self.mirrors[repository]

    def snapshot(self) -> View:
        """Every repository, each fetched when its head is older than its freshness bound."""
        if len(self.mirrors) == 1:
            return View({name: mirror.snapshot() for name, mirror in self.mirrors.items()})
        futures = {name: self._pool.submit(m.snapshot) for name, m in self.mirrors.items()}
        return View({name: future.result() for name, future in futures.items()})

    def has_head(self) -> bool:
        return all(mirror.has_head() for mirror in self.mirrors.values())

    def is_ancestor_anywhere(self, commit: str, later: str) -> bool:
        """Whether `later` comes after `commit` in one of the repositories (a commit of one
        repository names nothing in another)."""
        return any(mirror.is_ancestor(commit, later) for mirror in self.mirrors.values())

    def close(self) -> None:
        for mirror in self.mirrors.values():
            mirror.close()
        self._pool.shutdown(wait=False)
