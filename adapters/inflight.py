"""The adapters' own bound on answers in flight.

discord.py and slack-bolt each start a task per incoming event without a bound. An adapter hands
every event to ``Inflight.start`` instead: at most ``limit`` are worked on at once; past that a
message addressed to the bot is told "busy" at once (up to ``limit`` more notices), and anything
else is dropped. ``drain`` stops taking events and lets those in flight finish within a grace
period, as a shutdown should.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.core.reply import Reply
from bot.core.wording import BUSY
from bot.events import Event

__all__ = ["Inflight"]

log = logging.getLogger(__name__)


class Inflight:
    def __init__(self, platform: str, limit: int) -> None:
        self.platform = platform
        self.limit = max(1, limit)
        self.accepting = True
        self.tasks: set[asyncio.Future[Any]] = set()

    def start(
        self, event: Event, reply: Reply, handle: Callable[[Event, Reply], Awaitable[None]]
    ) -> None:
        if not self.accepting:
            return
        work: Awaitable[None]
        if len(self.tasks) < self.limit:
            work = handle(event, reply)
        elif event.addressed and len(self.tasks) < 2 * self.limit:
            work = reply.fail(BUSY)
        else:
            log.warning(
                "dropping %s message %s: too much work in flight", self.platform, event.message_id
            )
            return
        self.track(asyncio.ensure_future(work))

    def track(self, task: asyncio.Future[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self, grace: float) -> None:
        self.accepting = False
        tasks = list(self.tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
