"""An in-memory adapter for tests and embedding: push events in, read replies out."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.core.service import Outcome, Service
from bot.events import Event

__all__ = ["MemoryAdapter", "MemoryReply"]


@dataclass(eq=False)
class MemoryReply:
    started: bool = False
    updates: list[str] = field(default_factory=list)
    text: str | None = None
    failed: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: Outcome | None = None
    #: The "platform" id of this reply, which ratings refer to.
    message_id: str = ""
    handed_off: bool = False
    #: As a platform's reply: called when its first message is "posted" (the first update).
    on_posted: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> None:
        self.started = True

    async def update(self, text: str) -> None:
        self.updates.append(text)
        if len(self.updates) == 1 and self.on_posted is not None:
            await self.on_posted()

    async def finish(self, text: str) -> None:
        self.text = text
        self.finished.set()

    async def handoff(self, text: str, conversation: str = "") -> None:
        self.handed_off = True
        await self.finish(text)

    async def fail(self, message: str) -> None:
        self.text = message
        self.failed = True
        self.finished.set()

    async def wait(self, seconds: float = 120.0) -> str:
        await asyncio.wait_for(self.finished.wait(), seconds)
        assert self.text is not None
        return self.text


class MemoryAdapter:
    """``send()`` queues an event through the service as a platform would."""

    name = "memory"

    def __init__(self, service: Service, platform: str = "memory", durable: bool = False) -> None:
        self.service = service
        self.platform = platform
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        #: The replies of events answered after a restart (``durable``), in order.
        self.resumed: list[tuple[Event, MemoryReply]] = []
        if durable:
            service.resumable(platform, self.resume)

    async def resume(self, event: Event, reply_id: str) -> MemoryReply:
        """The reply to an event taken in before a restart: its message ``reply_id`` when the
        answer was already posted in one, else a new one."""
        reply = MemoryReply(message_id=reply_id or f"resumed-{event.message_id}")
        self.resumed.append((event, reply))
        return reply

    def event(self, text: str, channel: str = "c1", user: str = "u1", **fields: object) -> Event:
        # Unique across adapters and restarts, as a platform's ids are (dedup is persistent).
        fields.setdefault("message_id", f"{next(self._ids)}-{uuid.uuid4().hex[:8]}")
        return Event(platform=self.platform, channel=channel, user=user, text=text, **fields)  # type: ignore[arg-type]

    def send(
        self, text: str, channel: str = "c1", user: str = "u1", **fields: object
    ) -> MemoryReply:
        event = self.event(text, channel, user, **fields)
        reply = MemoryReply(message_id=f"reply-{event.message_id}")

        async def deliver() -> None:
            reply.outcome = await self.service.handle(event, reply)
            if not reply.finished.is_set():
                reply.finished.set()

        task = asyncio.create_task(deliver())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return reply

    async def drain(self, seconds: float = 120.0) -> None:
        """Wait for every sent event to be handled; fail if one raised."""
        if self._tasks:
            for task in await asyncio.wait_for(
                asyncio.gather(*self._tasks, return_exceptions=True), seconds
            ):
                if isinstance(task, BaseException):
                    raise task
