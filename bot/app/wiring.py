"""Wiring: the service a config describes, with its backend, store and knowledge base."""

from __future__ import annotations

from bot.config import Config
from bot.core.service import Service
from bot.generation import build_backend
from bot.storage import build_store

__all__ = ["build_service"]


def build_service(config: Config) -> Service:
    """The service ``config`` describes, not started."""
    knowledge = None
    if config.knowledge.enabled:
        from bot.knowledge.base import KnowledgeBase

        knowledge = KnowledgeBase(config.knowledge, config.store.path, company=config.bot.company)
    return Service(config, build_backend(config), build_store(config), knowledge)
