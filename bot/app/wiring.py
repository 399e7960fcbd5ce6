"""Wiring: the config with every platform's table, and the service it describes, with its
backend, store and knowledge base."""

from __future__ import annotations

import os

from adapters.settings import PLATFORMS
from bot.config import Config, load_config
from bot.core.service import Service
from bot.generation import build_backend
from bot.storage import build_store

__all__ = ["build_service", "load"]


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """The config at ``path`` (or ``$PARLEY_CONFIG``, or the defaults) with the adapters'
    tables; raises ConfigError naming the file and the key."""
    return load_config(path, PLATFORMS)


def build_service(config: Config) -> Service:
    """The service ``config`` describes, not started."""
    knowledge = None
    if config.knowledge.enabled:
        from bot.knowledge.base import KnowledgeBase

        knowledge = KnowledgeBase(config.knowledge, config.store.path, company=config.bot.company)
    return Service(config, build_backend(config), build_store(config), knowledge)
