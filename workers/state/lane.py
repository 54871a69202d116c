"""One push lane per repository branch: a Redis lease with a fencing token.

Whoever holds a lane's lease is the only process that commits and pushes to
that branch; everyone else waits for it, so workers never race each other
and an outside pusher is the only thing a push can lose to. The lease is
short and renewed by a heartbeat thread while its holder works, so a
holder that dies is replaced within `LEASE_SECONDS`. Each grant carries a
fencing token (a counter that only grows); the holder checks it still
holds the lease right before it pushes, and a stale holder stops there.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager

from redis import Redis

from config.errors import GitOpsError
from config.policy import Repository
from workers.state import keys

log = logging.getLogger(__name__)

LEASE_SECONDS = 10.0
RENEW_EVERY = LEASE_SECONDS / 4
POLL_SECONDS = 0.1

# KEYS: lease. ARGV: token, milliseconds. Extend only a lease we still hold.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseLost(GitOpsError):
    """Another process took over the push lane (ours expired); nothing more is pushed."""


def lane_name(repository: Repository) -> str:
    digest = hashlib.sha256(repository.url.encode()).hexdigest()[:12]
    return f"{digest}:{repository.branch}"


class Lane:
    def __init__(self, redis: Redis, name: str, lease_seconds: float = LEASE_SECONDS) -> None:
        self.redis = redis
        self.name = name
        self.lease_seconds = lease_seconds
        self.key = keys.lane_lease(name)
        self._fence = keys.lane_fence(name)
        self.pushed_key = keys.lane_pushed(name)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    def try_acquire(self) -> Lease | None:
        token = str(self.redis.incr(self._fence))
        if self.redis.set(self.key, token, nx=True, px=int(self.lease_seconds * 1000)):
            return Lease(self, token)
        return None

    def record_push(self, commit: str) -> None:
        """Say what this lane pushed last, so readers know their fetched head is stale."""
        self.redis.set(self.pushed_key, commit)

    def pushed(self) -> str | None:
        raw = self.redis.get(self.pushed_key)
        return raw.decode() if isinstance(raw, bytes) else raw

    def holder(self) -> str | None:
        raw = self.redis.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else raw

    @contextmanager
    def held(self, give_up: Callable[[], bool], timeout: float) -> Iterator[Lease | None]:
        """Wait for the lease (yields None if `give_up()` turns true or time runs out first),
        keep it renewed while the block runs, release it after."""
        deadline = time.monotonic() + timeout
        lease = self.try_acquire()
        while lease is None:
            if give_up() or time.monotonic() > deadline:
                yield None
                return
            time.sleep(POLL_SECONDS)
            lease = self.try_acquire()
        stop = threading.Event()
        beat = threading.Thread(
            target=lease.keep_alive, args=(stop,), daemon=True, name=f"lease-{self.name}"
        )
        beat.start()
        try:
            yield lease
        finally:
            stop.set()
            beat.join(timeout=2)
            lease.release()


@contextmanager
def held_together(
    lanes: Sequence[Lane], give_up: Callable[[], bool], timeout: float
) -> Iterator[list[Lease] | None]:
    """Every one of `lanes`' leases, taken one after another in the order given, or None
    (give_up, or time ran out). Every caller gives them in the policy's order of its
    repositories, so two callers never each hold a lane the other waits for."""
    deadline = time.monotonic() + timeout
    with ExitStack() as stack:
        leases = []
        for lane in lanes:
            left = max(0.1, deadline - time.monotonic())
            lease = stack.enter_context(lane.held(give_up, left))
            if lease is None:
                yield None
                return
            leases.append(lease)
        yield leases


class Lease:
    def __init__(self, lane: Lane, token: str) -> None:
        self.lane = lane
        self.token = token
        self.lost = False

    def renew(self) -> bool:
        ms = int(self.lane.lease_seconds * 1000)
        held = bool(self.lane._renew(keys=[self.lane.key], args=[self.token, ms]))
        self.lost = self.lost or not held
        return held

    def keep_alive(self, stop: threading.Event) -> None:
        while not stop.wait(self.lane.lease_seconds / 4):
            try:
                if not self.renew():
                    log.error("lost the push lane %s to another worker", self.lane.name)
                    return
            except Exception as exc:  # a Redis blip: try again at the next beat
                log.warning("could not renew the push lane lease: %s", exc)

    def check(self) -> None:
        """Raise `LeaseLost` unless this lease is still the lane's current one."""
        if self.lost or self.lane.holder() != self.token:
            self.lost = True
            raise LeaseLost(f"the push lane {self.lane.name} was taken over; not pushing")

    def release(self) -> None:
        try:
            self.lane._release(keys=[self.lane.key], args=[self.token])
        except Exception as exc:  # it expires on its own
            log.warning("could not release the push lane: %s", exc)
