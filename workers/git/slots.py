"""The folders a host's workers work in: one slot per worker process, held with a file lock,
and the clones of hosts long gone cleared away.

`workdir/<repository>/<host>/slot-N` is a working tree of the host's shared object store;
a worker holds its slot for as long as it works there. The host name in the path keeps
replicas that share a persistent volume out of each other's folders.
"""

from __future__ import annotations

import errno
import fcntl
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

MAX_SLOTS = 16
STALE_HOST_SECONDS = 7 * 24 * 3600


@contextmanager
def hold_slot(base: Path) -> Iterator[Path]:
    """The first free slot folder under `base`, held (flock) until the block ends."""
    base.mkdir(parents=True, exist_ok=True)
    handles: list[IO[str]] = []
    try:
        for number in range(MAX_SLOTS):
            handle: IO[str] = open(base / f"slot-{number}.lock", "w")  # noqa: SIM115 - held past this block
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                handle.close()
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                continue
            handles.append(handle)
            yield base / f"slot-{number}"
            return
        # Every slot busy: queue for the first one rather than make a seventeenth clone.
        first = open(base / "slot-0.lock", "w")  # noqa: SIM115 - held past this block
        handles.append(first)
        fcntl.flock(first, fcntl.LOCK_EX)
        yield base / "slot-0"
    finally:
        for handle in handles:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def prune_gone_hosts(here: Path, older_than: float = STALE_HOST_SECONDS) -> list[Path]:
    """Remove the folders of the hosts beside `here` whose every slot lock is older than
    `older_than` seconds."""
    removed: list[Path] = []
    now = time.time()
    if not here.parent.is_dir():
        return removed
    for host in here.parent.iterdir():
        locks = list(host.glob("slot-*.lock")) if host.is_dir() else []
        if host == here or not locks:
            continue
        if all(now - lock.stat().st_mtime > older_than for lock in locks):
            shutil.rmtree(host, ignore_errors=True)
            removed.append(host)
    return removed
