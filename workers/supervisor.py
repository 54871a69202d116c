"""Long-running loops (pollers, the outbox consumer) that survive what they meet.

Each loop runs one round at a time under `Supervisor.start`: an exception is
logged with its traceback, the loop backs off (doubling, up to a minute) and
goes on. `down()` names the loops whose last round failed, for `/readyz`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0


@dataclass
class LoopState:
    failures: int = 0
    last_error: str | None = None


class Supervisor:
    def __init__(self) -> None:
        self.loops: dict[str, LoopState] = {}
        self.threads: list[threading.Thread] = []

    def start(self, name: str, step: Callable[[], float], stop: threading.Event) -> None:
        """Run `step()` until `stop` is set; it returns how long to wait before the next round."""
        state = self.loops.setdefault(name, LoopState())

        def loop() -> None:
            while not stop.is_set():
                try:
                    wait = step()
                    state.failures, state.last_error = 0, None
                except Exception as exc:
                    state.failures += 1
                    state.last_error = f"{type(exc).__name__}: {exc}"
                    wait = min(MAX_BACKOFF, 0.5 * 2**state.failures)
                    log.exception("%s failed (%d in a row); again in %.0fs",
                                  name, state.failures, wait)  # fmt: skip
                stop.wait(wait)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def down(self) -> dict[str, str]:
        return {n: s.last_error or "" for n, s in self.loops.items() if s.failures}
