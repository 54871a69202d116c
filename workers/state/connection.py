"""The Redis connection every releasegate process shares state through."""

from __future__ import annotations

from redis import Redis

from config.settings import Settings

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def connect(settings: Settings) -> Redis:
    url = settings.redis_url.get_secret_value() if settings.redis_url else DEFAULT_REDIS_URL
    return Redis.from_url(url, health_check_interval=30)
