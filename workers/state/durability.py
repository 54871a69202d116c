"""Whether what was just written reached a replica, before a person is told it happened.

Redis replicates asynchronously: a master that dies right after a write can take it along,
and a replica promoted by Sentinel never saw it. So where replicas exist, a write the bot
confirms to a person (a request filed, an approval counted, a lock, a cancel) is first
waited for on one. `WAIT` counts the writes of the connection it runs on, and the bot's
writes go through a pool of connections; so a probe key is written and waited for on one
connection: the replication stream is one ordered stream, and a replica that has the probe
has every write made before it.

Under Sentinel, replicas are always expected: a master whose replicas are cut off counts
none connected, and that is exactly when a write is only on the master. A single server
is waited on only while it has replicas.
"""

from __future__ import annotations

import logging
import threading
import time

from redis import Redis
from redis.exceptions import RedisError
from redis.sentinel import SentinelConnectionPool

from workers.state import keys

log = logging.getLogger(__name__)

REPLICA_WAIT_MS = 1000  # how long a replica has to confirm, before the person is warned
LOOK_EVERY = 5.0  # seconds between looks at how many replicas the master has


class Durability:
    def __init__(self, redis: Redis, wait_ms: int = REPLICA_WAIT_MS) -> None:
        self.redis = redis
        self.wait_ms = wait_ms
        self._replicas = 0
        self._looked = -LOOK_EVERY
        self._lock = threading.Lock()
        self.sentinel = isinstance(redis.connection_pool, SentinelConnectionPool)

    def replicas(self) -> int:
        """How many replicas the master has (looked at every few seconds)."""
        with self._lock:
            if time.monotonic() - self._looked < LOOK_EVERY:
                return self._replicas
        try:
            info = self.redis.info("replication")
            count = int(info.get("connected_slaves", 0)) if info.get("role") == "master" else 0
        except RedisError:
            count = self._replicas  # the write itself will have said what is wrong
        with self._lock:
            self._replicas, self._looked = count, time.monotonic()
        return count

    def confirmed(self) -> bool:
        """True when every write made so far is on a replica, or when there is none to wait
        for; False when no replica confirmed within the wait (the write may be lost in a
        failover)."""
        if not self.sentinel and self.replicas() == 0:
            return True
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(keys.DURABLE_PROBE)
            pipe.wait(1, self.wait_ms)
            _probe, acked = pipe.execute()
        except RedisError as exc:
            log.warning("could not wait for a replica: %s", exc)
            return False
        if int(acked) < 1:
            log.warning("no replica confirmed the last writes within %d ms", self.wait_ms)
            return False
        return True
