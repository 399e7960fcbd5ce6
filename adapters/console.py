"""Terminal chat (``parley chat``): interactive, or one answer per line of piped input."""

from __future__ import annotations

import asyncio
import getpass
import sys
import uuid
from typing import TextIO

from bot.core.service import Service
from bot.events import Event

__all__ = ["ConsoleReply", "chat"]


class ConsoleReply:
    """Prints the answer as it grows; ends with a newline."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.shown = ""

    def _show(self, text: str) -> None:
        if text.startswith(self.shown):
            self.out.write(text[len(self.shown) :])
        else:
            # Cleaning changed text already shown (rare): start a fresh line with the whole.
            self.out.write("\n" + text)
        self.shown = text
        self.out.flush()

    async def start(self) -> None:
        pass

    async def update(self, text: str) -> None:
        self._show(text)

    async def finish(self, text: str) -> None:
        self._show(text)
        self.out.write("\n")
        self.out.flush()
        self.shown = ""

    async def fail(self, message: str) -> None:
        await self.finish(message)


async def chat(
    service: Service,
    conversation: str = "terminal",
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
) -> None:
    interactive = stdin.isatty()
    user = getpass.getuser()
    if interactive:
        bot = service.config.bot
        out.write(
            f"{bot.name} — {bot.company} support. Type a question; 'reset' forgets, Ctrl-D quits.\n"
        )
    while True:
        if interactive:
            out.write("> ")
            out.flush()
        line = await asyncio.to_thread(stdin.readline)
        if not line:
            break
        event = Event(
            platform="console",
            channel=conversation,
            user=user,
            user_name=user,
            text=line.rstrip("\n"),
            message_id=uuid.uuid4().hex,
            is_dm=True,
        )
        await service.handle(event, ConsoleReply(out))
    if interactive:
        out.write("\n")
