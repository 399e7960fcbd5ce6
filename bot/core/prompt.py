"""The prompt, and where it is trimmed to the model's window: the system prompt (with the
knowledge base's sources, or the sentences to answer from), as many of the newest turns as
fit, and the message itself, cut only when it alone does not fit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.generation.base import Backend, ChatMessage
from bot.knowledge.cite import grounded_prompt, knowledge_prompt, numbered, strip_sources
from bot.knowledge.grounding import Extract
from bot.knowledge.index import Source
from bot.knowledge.retrieve import Retrieval
from bot.storage.base import Turn

__all__ = ["Prompt", "build_prompt"]


@dataclass(frozen=True)
class Prompt:
    messages: list[ChatMessage]
    cut: bool = False
    #: The knowledge-base documents the prompt carries, numbered [1], [2], … in this order.
    sources: tuple[Source, ...] = ()


def build_prompt(
    backend: Backend,
    max_new_tokens: int,
    system_prompt: str,
    history: Sequence[Turn],
    text: str,
    context: str | None = None,
    retrieval: Retrieval | None = None,
    found: Extract | None = None,
) -> Prompt:
    """System prompt (with the retrieved sources, as many as fit, or only the sentences
    ``found`` to answer from) + as many of the newest turns as fit + this message, so that
    prompt and reply fit the model's window. Blocking (tokenizes): run it off the event
    loop."""
    budget = backend.context_window - max_new_tokens
    if context and not any(turn.content == context for turn in history):
        text = f'(Replying to this earlier message: "{context}")\n\n{text}'
    base = system_prompt
    system = ChatMessage("system", base)
    current = ChatMessage("user", text)
    sources: tuple[Source, ...] = ()
    if found is not None:
        system = ChatMessage("system", grounded_prompt(base, found))
        sources = found.sources
    elif retrieval is not None and retrieval.hits:
        documents = numbered(retrieval)
        # The best source always; further ones only while the question still fits whole.
        for keep in range(len(documents), 0, -1):
            system = ChatMessage("system", knowledge_prompt(base, retrieval, keep))
            if keep == 1 or backend.count_tokens([system, current]) <= budget:
                sources = tuple(source for _, source, _ in documents[:keep])
                break
    cut = False
    if backend.count_tokens([system, current]) > budget:
        overhead = backend.count_tokens([system, ChatMessage("user", "")])
        current = ChatMessage("user", backend.truncate(text, max(budget - overhead, 0)))
        cut = True
    # Earlier answers without their "Sources:" footers: the prompt numbers sources afresh.
    turns = [ChatMessage(t.role, strip_sources(t.content)) for t in history if t.content]

    def fits(kept: int) -> bool:
        chosen = turns[len(turns) - kept :] if kept else []
        return backend.count_tokens([system, *chosen, current]) <= budget

    # Binary search for the most recent turns that fit: the count grows with each turn kept.
    low, high = 0, len(turns)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    kept = turns[len(turns) - low :] if low else []
    return Prompt([system, *kept, current], cut, sources)
