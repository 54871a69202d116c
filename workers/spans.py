"""Where a deploy's time goes, step by step, for `scripts/bench.py`'s breakdown.

Off unless `RELEASEGATE_SPANS` names a file. Then each step's end is one line appended to
it: wall-clock time, process id, request id (`-` where not known yet) and the step's name.
Every process of a run (the bot and each worker) appends to the same file;
a line under `PIPE_BUF` written with `O_APPEND` is never interleaved with another. Off, a
mark costs one attribute check.
"""

from __future__ import annotations

import os
import time

_path = os.environ.get("RELEASEGATE_SPANS")
_fd: int | None = None


def mark(step: str, request_id: str = "-") -> None:
    global _fd
    if not _path:
        return
    if _fd is None:
        _fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(_fd, f"{time.time():.6f} {os.getpid()} {request_id} {step}\n".encode())


def read(path: str) -> list[tuple[float, int, str, str]]:
    """The marks in `path`: (time, pid, request id, step), in the order written."""
    marks = []
    with open(path) as lines:
        for line in lines:
            at, pid, request_id, step = line.split()
            marks.append((float(at), int(pid), request_id, step))
    return marks
