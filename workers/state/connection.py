"""The Redis connection every releasegate process shares state through: one server, or the
master that Redis Sentinel names (followed across a failover without a restart)."""

from __future__ import annotations

from typing import Any, cast

from redis import Redis
from redis.connection import SSLConnection, parse_url
from redis.sentinel import Sentinel

from config.settings import Settings

# redis-py before 8 has no types here and 8 has them: held as Any, so mypy is clean on both
# (a `type: ignore` is an error on one or the other).
_parse_url: Any = parse_url
_Sentinel: Any = Sentinel

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
    TLS (`rediss://`, with its query's `ssl_ca_certs` and the like); its host and port are not
    used. With TLS the sentinels are asked over TLS too, trusting the same authority."""
    # redis-py's own reading of a URL, query options included
    options: dict[str, Any] = _parse_url(url)
    for unused in ("host", "port", "path"):
        options.pop(unused, None)
    tls = options.pop("connection_class", None) is SSLConnection
    tls_options = {k: v for k, v in options.items() if k.startswith("ssl_")}
    secret = settings.redis_sentinel_password
    sentinel = _Sentinel(
        sentinel_addresses(settings.redis_sentinels or ""),
        sentinel_kwargs={
            "password": secret.get_secret_value() if secret else None,
            "socket_timeout": SOCKET_TIMEOUT,
            **({"ssl": True, **tls_options} if tls else {}),
        },
        socket_timeout=SOCKET_TIMEOUT,
    )
    # The URL's own options (`?socket_timeout=2`) win over ours.
    client = {"socket_timeout": SOCKET_TIMEOUT, "health_check_interval": 30, **options}
    master = sentinel.master_for(
        settings.redis_sentinel_master, redis_class=Redis, ssl=tls, **client
    )
    return cast(Redis, master)
