"""The one small async interface every generation backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Backend", "ChatMessage", "GenerationParams"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    #: Above 1, tokens the reply already contains are made less likely (logits above 0 divided
    #: by it, below 0 multiplied), as transformers' repetition penalty but over the reply only:
    #: copying words from the prompt's sources stays free.
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None


class Backend(ABC):
    """Produces replies: ``start()``, then any number of concurrent ``stream()``, then ``close()``.

    ``stream`` yields text deltas; closing or cancelling the iterator aborts the generation
    and frees its place. When too much is queued it raises :class:`bot.errors.Busy` at once.
    """

    #: How many tokens prompt + reply may take together.
    context_window: int = 2048

    @property
    def in_flight(self) -> int:
        """Requests being generated now (a metric)."""
        return 0

    @property
    def ready(self) -> bool:
        """Whether it takes requests now (the ops server's readiness)."""
        return True

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[str, None]: ...

    @abstractmethod
    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens the prompt for ``messages`` takes, generation prompt included."""

    def count_text(self, text: str) -> int:
        """Tokens ``text`` takes on its own (for metrics)."""
        empty = self.count_tokens([ChatMessage("assistant", "")])
        return max(0, self.count_tokens([ChatMessage("assistant", text)]) - empty)

    @abstractmethod
    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` that fits in ``max_tokens`` tokens."""
