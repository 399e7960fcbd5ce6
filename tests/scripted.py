"""A backend whose answers the test decides, for asserting what adapters do with model output
(mass mentions, very long answers, failures mid-reply) without depending on what a model says.
Everything else about the service (queues, store, cleaning) stays real."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Callable, Sequence

from bot.errors import GenerationError
from bot.generation.base import Backend, ChatMessage, GenerationParams

Answer = str | Callable[[Sequence[ChatMessage]], str]


class ScriptedBackend(Backend):
    """Streams ``answer`` (a string, or a function of the prompt) in chunks of ``chunk`` chars,
    pausing ``delay`` seconds between chunks. ``fail_after`` chunks, if set, it raises."""

    def __init__(
        self,
        answer: Answer = "Hello! How can I help?",
        chunk: int = 8,
        delay: float = 0.0,
        fail_after: int | None = None,
    ) -> None:
        self.answer = answer
        self.chunk = chunk
        self.delay = delay
        self.fail_after = fail_after
        self.context_window = 4096
        self.prompts: list[list[ChatMessage]] = []
        self.started = False
        self.active = 0

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.started = False

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(len(m.content) // 4 + 4 for m in messages)

    def truncate(self, text: str, max_tokens: int) -> str:
        return text[: max_tokens * 4]

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[str, None]:
        self.prompts.append(list(messages))
        text = self.answer(messages) if callable(self.answer) else self.answer
        self.active += 1
        try:
            for index in range(0, len(text), self.chunk):
                if self.fail_after is not None and index // self.chunk >= self.fail_after:
                    raise GenerationError("scripted failure")
                await asyncio.sleep(self.delay)
                yield text[index : index + self.chunk]
        finally:
            self.active -= 1


def quoting(pattern: str, lead: str, otherwise: str) -> Callable[[Sequence[ChatMessage]], str]:
    """An answer that quotes what ``pattern`` finds in the question as the model read it (an
    attached file's line): ``lead`` then the match, or ``otherwise``."""

    def answer(messages: Sequence[ChatMessage]) -> str:
        found = re.search(pattern, messages[-1].content)
        return f"{lead} {found.group()}." if found else otherwise

    return answer


class GatedBackend(ScriptedBackend):
    """Streams the first ``before_gate`` chunks, then holds the rest until the test opens
    ``gate``: the moment to look at a reply while the model is still writing."""

    def __init__(self, answer: Answer, chunk: int = 16, before_gate: int = 1) -> None:
        super().__init__(answer, chunk=chunk)
        self.gate = asyncio.Event()
        self.before_gate = before_gate

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[str, None]:
        sent = 0
        async for delta in super().stream(messages, params):
            yield delta
            sent += 1
            if sent == self.before_gate:
                await self.gate.wait()
