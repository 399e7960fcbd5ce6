"""The slash commands Parley registers on Discord; each hands its text to the adapter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands

__all__ = ["slash_commands"]

#: Takes a command's interaction, the text it stands for, and whether to defer (an answer may
#: take longer than the 3 seconds Discord waits for one).
Run = Callable[[discord.Interaction, str, bool], Awaitable[None]]


def slash_commands(name: str, run: Run) -> list[app_commands.Command[Any, ..., None]]:
    """/ask, /reset, /help, /human, and staff's /resolved, for the bot called ``name``."""

    @app_commands.command(name="ask", description=f"Ask {name} a question")
    @app_commands.describe(question="Your question, in plain words")
    async def ask(interaction: discord.Interaction, question: str) -> None:
        await run(interaction, question, True)

    @app_commands.command(name="reset", description=f"Make {name} forget this conversation")
    async def reset(interaction: discord.Interaction) -> None:
        await run(interaction, "reset", False)

    @app_commands.command(name="help", description=f"What {name} can do")
    async def help_(interaction: discord.Interaction) -> None:
        await run(interaction, "help", False)

    @app_commands.command(name="human", description="Ask for a person from the support team")
    async def human(interaction: discord.Interaction) -> None:
        await run(interaction, "human", False)

    @app_commands.command(
        name="resolved", description="Staff: give this conversation back to the bot"
    )
    async def resolved(interaction: discord.Interaction) -> None:
        await run(interaction, "resolved", False)

    return [ask, reset, help_, human, resolved]
