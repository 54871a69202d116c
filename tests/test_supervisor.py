"""Long-running loops survive what they meet, and say an outage once, not every round."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from workers.supervisor import Supervisor


def test_an_outage_is_logged_once_with_its_cause_and_its_end_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rounds = {"n": 0}
    done = threading.Event()

    def one_round() -> float:
        rounds["n"] += 1
        if rounds["n"] <= 3:
            raise ConnectionError("Redis is away")
        done.set()
        return 0.01

    stop = threading.Event()
    loops = Supervisor()
    with caplog.at_level(logging.INFO, logger="workers.supervisor"):
        loops.start("expiry", one_round, stop)
        assert done.wait(10)  # three backoffs: at most 0.5 + 1 + 2 s
        time.sleep(0.05)
        stop.set()
        loops.threads[0].join(2)
    said = [r for r in caplog.records if r.levelno >= logging.INFO]
    failed = [r for r in said if "trying again" in r.getMessage()]
    assert len(failed) == 1
    assert "ConnectionError: Redis is away" in failed[0].getMessage()
    assert failed[0].exc_info is None  # a service away is its message: one line, no traceback
    recovered = [r for r in said if "works again after 3 failed round(s)" in r.getMessage()]
    assert len(recovered) == 1
    assert loops.down() == {}


def test_backoff_grows_is_capped_and_spread() -> None:
    from workers.supervisor import MAX_BACKOFF, backoff

    waits = [backoff(n) for n in range(1, 12)]
    assert all(0 < w <= MAX_BACKOFF for w in waits)
    assert max(waits) > MAX_BACKOFF / 2
    assert len({backoff(8) for _ in range(20)}) > 1  # jitter: replicas drift apart


def test_an_unexpected_failure_is_logged_once_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rounds = {"n": 0}
    done = threading.Event()

    def one_round() -> float:
        rounds["n"] += 1
        if rounds["n"] <= 2:
            raise KeyError("a bug")
        done.set()
        return 0.01

    stop = threading.Event()
    loops = Supervisor()
    with caplog.at_level(logging.INFO, logger="workers.supervisor"):
        loops.start("expiry", one_round, stop)
        assert done.wait(10)
        stop.set()
        loops.threads[0].join(2)
    failed = [r for r in caplog.records if "trying again" in r.getMessage()]
    assert len(failed) == 1
    assert failed[0].exc_info is not None  # a bug's traceback, once
