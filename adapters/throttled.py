"""The part of showing a growing answer that every chat platform shares: throttled updates.

``update()`` only records the newest text and wakes a writer task, so the model never waits on
the platform: the writer shows the latest text at most once per ``interval`` seconds (updates
in between are merged away). ``finish()`` stops the writer and shows the final text. A platform
says how text is shown in ``_show``, usually as pieces under its length limit kept in step with
the messages posted (``_show_pieces``); helper tasks it starts (a typing indicator) go in
``_helpers`` and are cancelled when the answer ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

__all__ = ["ThrottledReply"]

log = logging.getLogger(__name__)


class ThrottledReply:
    platform = "chat"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._latest = ""
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._lock = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._helpers: list[asyncio.Task[None]] = []
        #: The answer's messages (the platform's handles), and the text each one shows.
        self.posted: list[Any] = []
        self.shown: list[str] = []
        #: Called once the answer's first message is posted (the service records its id, so
        #: that a restart after a crash finishes that message instead of posting another).
        self.on_posted: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> None:
        """Generation begins; nothing to show yet by default."""

    async def update(self, text: str) -> None:
        if self._done.is_set():
            return
        self._latest = text
        self._wake.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name=f"{self.platform} reply")

    async def finish(self, text: str) -> None:
        await self._stop()
        async with self._lock:
            await self._show(text, final=True)

    async def fail(self, message: str) -> None:
        await self.finish(message)

    async def close(self) -> None:
        """Stop updating without a final message (the adapter is shutting down)."""
        await self._stop()

    async def _show(self, text: str, final: bool) -> None:
        raise NotImplementedError

    async def _show_pieces(
        self,
        pieces: Sequence[str],
        final: bool,
        edit: Callable[[Any, str], Awaitable[Any]],
        post: Callable[[int, str], Awaitable[Any]],
        delete: Callable[[Any], Awaitable[Any]],
    ) -> None:
        """Make the messages show ``pieces``: edit those whose text changed, post the missing
        ones (``post`` returns the new message); on the final text, delete continuations it no
        longer needs (cleaning removed a tail)."""
        for index, piece in enumerate(pieces):
            if index < len(self.posted):
                if self.shown[index] != piece:
                    await edit(self.posted[index], piece)
                    self.shown[index] = piece
            else:
                self.posted.append(await post(index, piece))
                self.shown.append(piece)
                await self._posted()
        if final and pieces:
            while len(self.posted) > len(pieces):
                extra = self.posted.pop()
                self.shown.pop()
                await delete(extra)

    async def _posted(self) -> None:
        """After a message of the answer is posted: the first one is reported."""
        if len(self.posted) == 1 and self.on_posted is not None:
            await self.on_posted()

    async def _stop(self) -> None:
        self._done.set()
        self._wake.set()
        for task in self._helpers:
            task.cancel()
        # The writer finishes the update it is making, so no message is posted twice; what
        # either failed with was logged, and must not stop the final message.
        tasks = [*self._helpers, *([self._writer] if self._writer else [])]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._done.is_set():
                return
            try:
                async with self._lock:
                    await self._show(self._latest, final=False)
            except Exception as exc:
                # A failed intermediate update is not fatal: the next or the final one follows.
                log.warning("could not update a %s reply: %s", self.platform, exc)
            # The throttle; finishing cuts the wait short.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), self.interval)
