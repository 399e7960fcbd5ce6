"""The support team's console: a web page served by ``parley run`` that shows what customers
ask, what the bot answered and could not, and what to write next (README, "The console")."""

from bot.app.console.server import ConsoleServer

__all__ = ["ConsoleServer"]
