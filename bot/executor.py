"""A bounded pool for chat work, so a platform is acknowledged before any of it runs.

Platform listeners hand their work here and return at once. The pool has a
fixed number of threads and a fixed number of places to wait; when both are
taken, `submit` says no and the listener answers "busy" instead of letting
requests pile up (or a platform's 3-second acknowledgement run out).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

# Chat work waits on Redis and chat APIs, two at a time. More threads only fight the HTTP
# thread for the GIL: with four, the bench's acknowledgement p50 was 25 ms; with two, 15.
WORKERS = 2
WAITING = 1000  # a burst of a thousand commands is answered, just later


class BoundedExecutor:
    def __init__(self, workers: int = WORKERS, waiting: int = WAITING, name: str = "chat") -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._places = threading.BoundedSemaphore(workers + waiting)
        self._idle = threading.Condition()
        self._busy = 0  # submitted and not finished

    def submit(self, work: Callable[..., Any], *args: Any) -> bool:
        """Run `work(*args)` soon; False (and nothing runs) when the pool is full."""
        if not self._places.acquire(blocking=False):
            return False
        with self._idle:
            self._busy += 1

        def run() -> None:
            try:
                work(*args)
            except Exception:
                log.exception("chat work failed")
            finally:
                self._done()

        try:
            self._pool.submit(run)
        except RuntimeError:  # shutting down
            self._done()
            return False
        return True

    def _done(self) -> None:
        self._places.release()
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far has run (tests and shutdown use it instead
        of sleeping); False when `timeout` seconds were not enough."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout=timeout)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
