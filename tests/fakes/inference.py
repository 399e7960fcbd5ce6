"""A fake OpenAI-compatible inference server on 127.0.0.1, whose answers a test scripts.

``GET /v1/models`` and ``POST /v1/chat/completions`` with ``stream: true``, answered as vLLM
does: server-sent events of ``choices[0].delta.content``, then ``finish_reason`` and
``[DONE]``. A test decides what the next requests get: a refusal (a status with
``Retry-After``), a key to check, the answer's pieces, and ``stall_after``: after that many
pieces the stream stops sending and waits (the model "still thinking") until the test calls
``release()``: how a test catches a process in the middle of streaming an answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["FakeInference", "serving"]


@dataclass
class FakeInference:
    url: str = ""
    #: The chat requests received, refused ones included.
    hits: int = 0
    #: What the next chat requests get: a status (with Retry-After), or None for a good reply.
    refusals: list[tuple[int, str]] = field(default_factory=list)
    always: tuple[int, str] | None = None
    key: str | None = None
    pieces: tuple[str, ...] = ("Hello", " there", "!")
    stall_after: int | None = None
    #: The bodies of the chat requests answered.
    bodies: list[dict[str, Any]] = field(default_factory=list)
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        """Stalled streams go on, and no later one stalls."""
        self.stall_after = None
        self._released.set()

    @property
    def answer(self) -> str:
        return "".join(self.pieces)

    def _authorised(self, request: web.Request) -> bool:
        return self.key is None or request.headers.get("Authorization") == f"Bearer {self.key}"

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": {"message": "Invalid API key"}}, status=401)
        return web.json_response({"object": "list", "data": [{"id": "support-model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if not self._authorised(request):
            return web.json_response({"error": {"message": "Invalid API key"}}, status=401)
        refusal = self.refusals.pop(0) if self.refusals else self.always
        if refusal is not None:
            status, retry_after = refusal
            return web.json_response(
                {"error": {"message": "overloaded"}},
                status=status,
                headers={"Retry-After": retry_after} if retry_after else {},
            )
        self.bodies.append(await request.json())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for sent, piece in enumerate(self.pieces):
            if self.stall_after is not None and sent >= self.stall_after:
                await self._released.wait()
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await response.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
        return response


@asynccontextmanager
async def serving(**fields: Any) -> AsyncIterator[FakeInference]:
    """A started fake with ``fields`` set; its ``url`` is the server's root."""
    fake = FakeInference(**fields)
    app = web.Application()
    app.router.add_get("/v1/models", fake._models)
    app.router.add_post("/v1/chat/completions", fake._chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield fake
    finally:
        fake.release()
        await runner.cleanup()
