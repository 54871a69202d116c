"""The Redis connection every releasegate process shares state through: one server, or the
master that Redis Sentinel names (followed across a failover without a restart)."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import unquote, urlsplit

from redis import Redis
from redis.sentinel import Sentinel

from config.settings import Settings

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
SOCKET_TIMEOUT = 5.0  # seconds: a master that died mid-answer is noticed, then rediscovered


def connect(settings: Settings) -> Redis:
    url = settings.redis_url.get_secret_value() if settings.redis_url else DEFAULT_REDIS_URL
    if not settings.redis_sentinels:
        return Redis.from_url(url, health_check_interval=30)
    return _through_sentinel(settings, url)


def sentinel_addresses(text: str) -> list[tuple[str, int]]:
    """`h1:26379,h2:26379` as (host, port) pairs."""
    found = []
    for item in (part.strip() for part in text.split(",")):
        if item:
            host, _, port = item.rpartition(":")
            found.append((host.strip("[]") or "localhost", int(port)))
    return found


def _through_sentinel(settings: Settings, url: str) -> Redis:
    """The master Sentinel names now; the client asks Sentinel again whenever the master it
    had stops answering. RELEASEGATE_REDIS_URL gives only the user, password, database and
    TLS; its host and port are not used."""
    parts = urlsplit(url)
    kwargs: dict[str, Any] = {
        "db": int(parts.path.strip("/") or 0),
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "ssl": parts.scheme == "rediss",
        "socket_timeout": SOCKET_TIMEOUT,
        "health_check_interval": 30,
    }
    secret = settings.redis_sentinel_password
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py: untyped
        sentinel_addresses(settings.redis_sentinels or ""),
        sentinel_kwargs={
            "password": secret.get_secret_value() if secret else None,
            "socket_timeout": SOCKET_TIMEOUT,
        },
        socket_timeout=SOCKET_TIMEOUT,
    )
    master = sentinel.master_for(  # type: ignore[no-untyped-call]  # redis-py: untyped
        settings.redis_sentinel_master, redis_class=Redis, **kwargs
    )
    return cast(Redis, master)
