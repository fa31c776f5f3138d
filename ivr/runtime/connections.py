"""The Redis a process talks to: REDIS_URL, or the embedded one under IVR_DATA_DIR."""

from __future__ import annotations

from redis import Redis

from ivr.config import Config


def redis_url(config: Config) -> tuple[str, bool]:
    """(url, started): REDIS_URL, else the embedded Redis's URL, started if needed (`started`
    tells the caller it owns that server)."""
    if config.redis_url:
        return config.redis_url, False
    from .embedded import ensure_redis

    return ensure_redis(config.data_dir)


def redis_for(config: Config, **options) -> Redis:
    """A client for the configured Redis (the embedded one without REDIS_URL)."""
    url, _ = redis_url(config)
    return Redis.from_url(url, **options)
