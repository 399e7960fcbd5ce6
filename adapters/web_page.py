"""One open web chat page: the answers it shows, and the one task that writes to its socket.

An answer's pending text is a merging mailbox: ``update`` only records the newest text and wakes
the page's writer, which sends what is newest when the socket is ready, so a slow page never
slows decoding.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from typing import Any

from aiohttp import web

from adapters.markdown import to_html
from bot.core.ratelimit import TokenBucket
from bot.events import ConversationKey

__all__ = ["Page", "WebReply"]


class WebReply:
    """One answer on one page. ``update`` only records the text and wakes the page's writer,
    which sends whatever is newest when the socket is ready."""

    def __init__(self, page: Page, ask: str, handoff_text: str) -> None:
        self.page = page
        self.ask = ask
        self.handoff_text = handoff_text
        #: The id ratings refer to; recorded with the answer in the store.
        self.message_id = f"web-{uuid.uuid4().hex}"
        self.latest = ""
        self.sent = ""
        self.queued = False
        self.started = False
        self.finished = False
        self.failed = False

    async def start(self) -> None:
        self.started = True
        self.page.send({"type": "start", "id": self.ask})

    async def update(self, text: str) -> None:
        if not self.finished:
            self.latest = text
            self.page.stream(self)

    async def finish(self, text: str) -> None:
        self.finished = True
        self.page.send(
            {
                "type": "final",
                "id": self.ask,
                "text": text,
                "html": to_html(text),
                "failed": self.failed,
            }
        )

    async def fail(self, message: str) -> None:
        self.failed = True
        await self.finish(message)

    async def handoff(self, text: str, conversation: str) -> None:
        # The service's own text promises an answer "here", which the web page cannot give.
        await self.finish(self.handoff_text)

    def pending_text(self) -> dict[str, Any] | None:
        """The message bringing the page up to date, or None when it already is."""
        text = self.latest
        if self.finished or text == self.sent:
            return None
        if text.startswith(self.sent):
            message = {"type": "text", "id": self.ask, "append": text[len(self.sent) :]}
        else:
            message = {"type": "text", "id": self.ask, "text": text}
        # The page shows the server's rendering of the whole answer so far, never its own.
        message["html"] = to_html(text)
        self.sent = text
        return message


class Page:
    """One open socket: what it shows, what it may still send, and the tasks working for it."""

    def __init__(self, ws: web.WebSocketResponse, key: ConversationKey, bucket: TokenBucket):
        self.ws = ws
        self.key = key
        self.bucket = bucket
        self.answers: set[asyncio.Task[None]] = set()
        self.chores: set[asyncio.Task[None]] = set()
        self.replies: set[WebReply] = set()
        self._outbox: deque[dict[str, Any] | WebReply] = deque()
        self._wake = asyncio.Event()

    @property
    def visitor(self) -> str:
        return self.key.channel

    def send(self, message: dict[str, Any]) -> None:
        self._outbox.append(message)
        self._wake.set()

    def stream(self, reply: WebReply) -> None:
        if not reply.queued:
            reply.queued = True
            self._outbox.append(reply)
            self._wake.set()

    async def write(self) -> None:
        """The socket's only writer, until the socket closes."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                item = self._outbox.popleft()
                if isinstance(item, WebReply):
                    item.queued = False
                    message = item.pending_text()
                    if message is None:
                        continue
                else:
                    message = item
                try:
                    await self.ws.send_str(json.dumps(message, ensure_ascii=False))
                except ConnectionError:
                    return
