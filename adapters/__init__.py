"""Platform adapters: each turns its platform's messages into ``bot.events.Event`` and shows
replies the platform's way. The CLI loads them by name; the core never imports them.

A module that ``parley run`` can start exposes::

    def enabled(config: Config) -> bool        # raises ConfigError if switched on without secrets
    def create(config: Config, service: Service) -> Adapter

and the ``Adapter`` it returns runs until cancelled (``run``), raising ``PlatformError`` with a
one-line reason on a fatal error.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["RUNNABLE", "Adapter"]

#: Adapters ``parley run`` considers, in start order.
RUNNABLE: tuple[str, ...] = ("web", "discord", "slack")


class Adapter(Protocol):
    name: str

    async def run(self) -> None:
        """Connect and serve until cancelled; clean up on the way out."""
