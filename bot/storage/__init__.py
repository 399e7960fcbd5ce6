"""Storage: what the service keeps (``base.Store``), in SQLite (``sqlite``, the default, one
file) or Redis (``redis``, shared by replicas). ``build_store`` picks one from the config."""

from __future__ import annotations

from bot.config import Config
from bot.errors import ConfigError
from bot.storage.base import Store

__all__ = ["build_store"]


def build_store(config: Config) -> Store:
    """SQLite at ``store.path``, or Redis when ``store.url`` names one (several replicas)."""
    url = config.store.url
    if not url:
        from bot.storage.sqlite import SQLiteStore

        return SQLiteStore(config.store.path)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"{config.source}: 'store.url' must be empty (SQLite) or a redis://, rediss:// or"
            " unix:// URL"
        )
    from bot.storage.redis import RedisStore

    return RedisStore(
        url,
        password=config.secret(config.store.password_env),
        prefix=config.store.prefix,
        lock_ttl=config.store.lock_ttl,
    )
