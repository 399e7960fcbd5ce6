"""Turning a growing list of token ids into text deltas, and cutting at stop strings.

Decoding token by token breaks multi-byte characters and loses the spaces some tokenizers
attach to the next token, so each step decodes a short window of recent tokens and emits only
text that is complete (no trailing U+FFFD), the way TGI and vLLM do it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["IncrementalDecoder"]


class IncrementalDecoder:
    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._longest_stop = max((len(s) for s in self._stop), default=0)
        self._tokens: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self._text = ""
        self._emitted = 0
        self.stopped = False

    @property
    def text(self) -> str:
        """Everything decoded so far, up to a stop string if one was met."""
        return self._text

    def push(self, token_id: int) -> str:
        """Add one token; return the text that became safe to show (may be empty)."""
        if self.stopped:
            return ""
        self._tokens.append(token_id)
        decode = self._tokenizer.decode
        before = decode(
            self._tokens[self._prefix_offset : self._read_offset], skip_special_tokens=True
        )
        after = decode(self._tokens[self._prefix_offset :], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._text += after[len(before) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._tokens)
        return self._release(final=False)

    def flush(self) -> str:
        """At the end: whatever was held back because it might have started a stop string."""
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        text = self._text
        if self._stop:
            start = max(0, self._emitted - self._longest_stop)
            hits = [i for i in (text.find(s, start) for s in self._stop) if i >= 0]
            if hits:
                self._text = text = text[: min(hits)]
                self.stopped = True
                final = True
        end = len(text) if final else len(text) - self._held_back(text)
        end = max(end, self._emitted)
        delta = text[self._emitted : end]
        self._emitted = end
        return delta

    def _held_back(self, text: str) -> int:
        """Length of the longest tail of ``text`` that could still grow into a stop string."""
        for size in range(min(self._longest_stop - 1, len(text)), 0, -1):
            tail = text[-size:]
            if any(s.startswith(tail) for s in self._stop):
                return size
        return 0
