"""What the adapter tests share: recording the service's outcomes, and a connected adapter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from bot.service import Outcome, Service

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
