"""After a restart: the questions taken into the inbox and never answered are answered now.

A durable platform's events are written to the store's inbox before they are answered
(``Service.admit``); whatever a crash, a kill or a deploy left there is taken up again, once
whoever held it (its lease) is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta

from bot.config import LimitsConfig
from bot.core.reply import Reply, reply_id
from bot.core.wording import TOO_LATE
from bot.errors import StoreError
from bot.events import Event
from bot.storage.base import Store

__all__ = ["Recovery", "Resume", "lease_key"]

log = logging.getLogger(__name__)

#: Builds the reply that answers an event after a restart: (event, id of the message its answer
#: was already posted in, or '').
Resume = Callable[[Event, str], Awaitable[Reply]]


def lease_key(marker: str) -> str:
    """The claim held while an event is answered: whoever holds it is alive and answering."""
    return f"lease/{marker}"


class Recovery:
    def __init__(
        self,
        limits: LimitsConfig,
        store: Store,
        resumers: Mapping[str, Resume],
        answering: set[str],
        lease_seconds: float,
        answer: Callable[[Event, Reply], Awaitable[None]],
        inbox: Callable[[Awaitable[None]], Awaitable[None]],
    ) -> None:
        self.limits = limits
        self.store = store
        self.resumers = resumers
        #: Events this process is answering now (shared with the service).
        self.answering = answering
        self.lease_seconds = lease_seconds
        self.answer = answer
        self._inbox = inbox

    async def recover(self, platform: str) -> int:
        """Answer ``platform``'s events taken in but not answered when the service last stopped
        (a crash, a kill, a deploy): oldest first, at most ``limits.recover_per_minute`` a
        minute; those older than ``limits.recover_within_minutes`` get an apology instead.
        Returns how many were answered or apologised to."""
        resume = self.resumers[platform]
        limits = self.limits
        try:
            waiting = [w for w in await self.store.inbox_waiting() if w.event.platform == platform]
        except StoreError:
            log.exception("cannot read the inbox: questions asked before the restart wait")
            return 0
        done = 0
        for entry in waiting:
            event = entry.event
            if event.marker in self.answering:
                continue  # delivered again since the restart, and being answered
            # Whoever holds its lease (a replica answering it, or recovering it) is alive: it is
            # theirs. One answered meanwhile (delivered again, caught up with) is left alone.
            try:
                if not await self.store.claim(lease_key(event.marker), self.lease_seconds):
                    continue
                if await self.store.inbox_state(event.marker) in (None, "answered"):
                    await self.store.release(lease_key(event.marker))
                    continue
            except StoreError:
                log.exception("cannot claim %s for recovery", event.marker)
                continue
            if done and limits.recover_per_minute > 0:
                await asyncio.sleep(60.0 / limits.recover_per_minute)
            reply = await resume(event, entry.reply_id)
            age = datetime.now(UTC) - entry.received_at
            if limits.recover_within_minutes > 0 and age > timedelta(
                minutes=limits.recover_within_minutes
            ):
                log.info("apologising for %s, taken in %s ago", event.marker, age)
                await reply.finish(TOO_LATE)
                await self._inbox(self.store.inbox_mark(event.marker, "answered", reply_id(reply)))
            else:
                log.info("answering %s, taken in before the restart", event.marker)
                await self.answer(event, reply)
            done += 1
        return done
