"""What the adapter tests share: recording the service's outcomes, a connected adapter, and
what waits in a store's inbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bot.core.service import Outcome, Service
from bot.events import Event
from bot.storage.sqlite import SQLiteStore

Outcomes = list[tuple[str, Outcome]]


def record_outcomes(
    service: Service, after: Callable[[], Awaitable[None]] | None = None
) -> Outcomes:
    """Wrap ``service.handle`` to collect (message id, outcome) pairs; ``after`` runs after
    each. ``del service.handle`` undoes it."""
    outcomes: Outcomes = []
    handle = service.handle

    async def recording(event: Any, reply: Any, **options: Any) -> Outcome:
        outcome = await handle(event, reply, **options)
        outcomes.append((event.message_id, outcome))
        if after is not None:
            await after()
        return outcome

    service.handle = recording  # type: ignore[method-assign]
    return outcomes


@asynccontextmanager
async def connected(adapter: Any, within: float = 15) -> AsyncIterator[None]:
    """Run ``adapter`` until the block ends; enter once it is ready (or raise why it stopped)."""
    running = asyncio.create_task(adapter.run())
    ready = asyncio.create_task(adapter.ready.wait())
    try:
        done, _ = await asyncio.wait(
            [running, ready], timeout=within, return_when=asyncio.FIRST_COMPLETED
        )
        if running in done:
            running.result()
        assert ready in done, "the adapter did not become ready"
        yield
    finally:
        ready.cancel()
        running.cancel()
        await asyncio.gather(running, ready, return_exceptions=True)


async def left_by_a_crash(
    db: str | Path, event: Event, claimed: bool = False, reply_id: str = ""
) -> None:
    """Put in the SQLite store what a process killed after taking ``event`` in leaves there:
    the inbox entry, the claim of its delivery when ``claimed``, and the message its answer
    was posted in so far (``reply_id``)."""
    store = SQLiteStore(db)
    await store.open()
    try:
        await store.inbox_add(event)
        if claimed:
            assert await store.claim(event.marker, 86400)
        if reply_id:
            await store.inbox_mark(event.marker, "answering", reply_id)
    finally:
        await store.close()


async def waiting(db: str | Path) -> int:
    """Questions in the SQLite store's inbox not answered yet."""
    store = SQLiteStore(db)
    await store.open()
    try:
        return (await store.inbox_count())[0]
    finally:
        await store.close()


async def inbox_emptied(db: str | Path, within: float = 15.0) -> None:
    """Wait until every question in the inbox is answered."""
    for _ in range(int(within / 0.05)):
        if not await waiting(db):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{await waiting(db)} question(s) still wait in the inbox")
