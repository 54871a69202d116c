"""Long-running loops (pollers, the outbox consumer, the sweeper) that survive what they meet.

A loop is a function that does one round and returns how long to wait before the next.
`Supervisor.start` runs rounds until it is told to stop: a round that raises backs the
loop off (doubling up to a minute, with jitter, so replicas that met the same outage do
not retry in step) and it goes on. An outage is logged once, with its traceback, when it
starts (and again if the error changes), and once more when the loop works again: Redis
gone for an hour is two lines, not a traceback a minute. `down()` names the loops whose
last round failed, for `/readyz`.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0

Round = Callable[[], float]  # one round of a loop; returns the seconds until the next


@dataclass
class LoopState:
    failures: int = 0
    last_error: str | None = None


# Failures whose cause is their message (a service that cannot be reached, Redis refusing):
# their traceback tells an operator nothing more.
QUIET: tuple[type[BaseException], ...] = (RedisError, ConnectionError, TimeoutError)


def backoff(failures: int) -> float:
    """Seconds before the next round after `failures` failed rounds in a row: doubling, capped,
    and spread over its upper half so that replicas drift apart."""
    ceiling = min(MAX_BACKOFF, 0.5 * 2**failures)
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - spreading retries, not a secret


class Supervisor:
    def __init__(self) -> None:
        self.loops: dict[str, LoopState] = {}
        self.threads: list[threading.Thread] = []

    def start(self, name: str, one_round: Round, stop: threading.Event) -> None:
        """Run `one_round()` until `stop` is set."""
        state = self.loops.setdefault(name, LoopState())

        def loop() -> None:
            while not stop.is_set():
                try:
                    wait = one_round()
                    if state.failures:
                        log.info("%s works again after %d failed round(s)", name, state.failures)
                    state.failures, state.last_error = 0, None
                except Exception as exc:
                    state.failures += 1
                    error = f"{type(exc).__name__}: {exc}"
                    wait = backoff(state.failures)
                    if error != state.last_error and isinstance(exc, QUIET):
                        # Redis or a service away: said in one line, not a chained traceback.
                        log.error("%s failed; trying again with backoff (%s)", name, error)
                    elif error != state.last_error:
                        log.exception("%s failed; trying again with backoff (%s)", name, error)
                    else:
                        log.debug("%s failed again (%d in a row)", name, state.failures)
                    state.last_error = error
                stop.wait(wait)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def down(self) -> dict[str, str]:
        return {n: s.last_error or "" for n, s in self.loops.items() if s.failures}
