"""Loops that run once at a time across bot replicas: whoever holds the loop's lease.

Each round, the holder renews its lease (a Redis key with a time to live); the others
find it held and wait. A holder that dies stops renewing, and another replica takes the
loop over within the lease's time. Used for the Rocket.Chat poller (one reader of the
channels), the expiry round and name resolution.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable

from redis import Redis

from workers.state import keys

log = logging.getLogger(__name__)

# KEYS: lease. ARGV: holder, ttl ms. Take a free lease or renew our own; 1 if ours now.
_HOLD = """
local now = redis.call('GET', KEYS[1])
if not now then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
if now == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""


class Leadership:
    """This replica's claim on one loop."""

    def __init__(self, redis: Redis, loop: str, ttl: float) -> None:
        self.redis = redis
        self.loop = loop
        self.key = keys.leader(loop)
        self.ttl = ttl
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.holding = False
        self._hold = redis.register_script(_HOLD)

    def hold(self) -> bool:
        """Take or renew the lease; whether this replica runs the loop now."""
        held = bool(self._hold(keys=[self.key], args=[self.holder, int(self.ttl * 1000)]))
        if held != self.holding:
            log.info("%s the %s loop", "took over" if held else "no longer runs", self.loop)
        self.holding = held
        return held

    def release(self) -> None:
        if self.holding and self.redis.get(self.key) == self.holder.encode():
            self.redis.delete(self.key)
        self.holding = False


def led(leadership: Leadership, round_: Callable[[], float]) -> Callable[[], float]:
    """`round_` run only while this replica holds the loop; the others look again in a
    third of the lease's time (a dead holder's loop is taken over within it)."""

    def one() -> float:
        if not leadership.hold():
            return leadership.ttl / 3
        return min(round_(), leadership.ttl / 3)

    return one
