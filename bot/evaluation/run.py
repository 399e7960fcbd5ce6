"""Every golden question through the real answer path, each in a conversation of its own.

The service is the one ``parley run`` builds (the same config, model, policy, retrieval, prompt
and post-processing), on a store of its own in a temporary folder: the knowledge base under test
is ingested afresh there and nothing is written to the live store. Each question is a web
chat message; many are in flight at once, so the engine batches them as it batches customers.
Rate limits are off, since one asker sends every question.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.config import Config, LimitsConfig
from bot.core.service import Outcome, Service
from bot.evaluation.golden import GoldenItem
from bot.events import Event
from bot.generation import build_backend
from bot.generation.base import Backend
from bot.knowledge.base import KnowledgeBase
from bot.knowledge.cite import strip_sources
from bot.knowledge.claims import Evidence, Specific, has_fact, unsupported
from bot.knowledge.embed import Embedder
from bot.knowledge.index import Source
from bot.knowledge.scope import Signals
from bot.storage import build_store
from bot.storage.base import Snippet

__all__ = ["Result", "eval_config", "evaluate", "names"]


@dataclass(frozen=True, slots=True)
class Result:
    """One golden question, answered."""

    item: GoldenItem
    answer: str  # the reply as the customer sees it, sources included
    outcome: str  # answered, dont_know, handed_off, busy, failed, …
    sources: tuple[Source, ...]  # the documents the answer lists
    retrieved: tuple[Source, ...]  # the documents of the top sections, best first (repeats kept)
    unsupported: tuple[Specific, ...]
    first_text: float  # seconds to the first text the customer sees
    seconds: float  # seconds to the whole answer
    # The don't-know's signals (bot.knowledge.scope), for --tune; None where nothing was found.
    signals: Signals | None = None

    @property
    def refused(self) -> bool:
        """Don't-know or handed to a person."""
        return self.outcome in ("dont_know", Outcome.HANDED_OFF.value)

    @property
    def body(self) -> str:
        return strip_sources(self.answer)

    @property
    def missing(self) -> tuple[str, ...]:
        """The facts the answer lacks (each by its first accepted form)."""
        return tuple(forms[0] for forms in self.item.facts if not has_fact(self.body, forms))

    @property
    def cited(self) -> bool:
        return any(names(source, self.item.document) for source in self.sources)

    def retrieved_within(self, k: int) -> bool:
        return any(names(source, self.item.document) for source in self.retrieved[:k])


def names(source: Source, document: str) -> bool:
    """Whether a golden line's ``document`` names ``source`` (file name, path, title or URL)."""
    wanted = document.strip().lower()
    return wanted in {
        Path(source.path).name.lower(),
        source.path.lower(),
        source.title.lower(),
        source.url.lower(),
    }


class _Collected:
    """A reply that keeps its final text and when the first text came."""

    def __init__(self, began: float) -> None:
        self.began = began
        self.first: float | None = None
        self.text = ""

    def _shown(self) -> None:
        if self.first is None:
            self.first = time.monotonic() - self.began

    async def start(self) -> None:
        pass

    async def update(self, text: str) -> None:
        if text.strip():
            self._shown()

    async def finish(self, text: str) -> None:
        self._shown()
        self.text = text

    async def fail(self, message: str) -> None:
        self._shown()
        self.text = message


def eval_config(config: Config, kb_paths: Sequence[str], folder: str) -> Config:
    """``config`` for an evaluation: its own SQLite store in ``folder``, no rate limits, and
    the knowledge base at ``kb_paths`` when given."""
    knowledge = dataclasses.replace(config.knowledge, enabled=True, auto_ingest=True)
    if kb_paths:
        knowledge = dataclasses.replace(knowledge, paths=list(kb_paths))
    return dataclasses.replace(
        config,
        store=dataclasses.replace(config.store, path=str(Path(folder) / "eval.db"), url=""),
        limits=LimitsConfig(
            user_per_minute=0,
            channel_per_minute=0,
            bot_messages_per_channel_minute=0,
            bot_turns_in_a_row=config.limits.bot_turns_in_a_row,
        ),
        knowledge=knowledge,
    )


async def evaluate(
    config: Config,
    items: Sequence[GoldenItem],
    kb_paths: Sequence[str] = (),
    backend: Backend | None = None,
    embedder: Embedder | None = None,
    concurrency: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> list[Result]:
    """Answer every item, at most ``concurrency`` at a time; the results in the items' order."""
    taught = await _taught(config)
    with tempfile.TemporaryDirectory(prefix="parley-eval-") as folder:
        config = eval_config(config, kb_paths, folder)
        kb = KnowledgeBase(config.knowledge, config.store.path, embedder, config.bot.company)
        service = Service(config, backend or build_backend(config), build_store(config), kb)
        await service.start()
        try:
            for snippet in taught:
                await service.store.add_snippet(snippet)
            await service.learning.sync()
            if not kb.size:
                from bot.errors import ConfigError

                paths = ", ".join(config.knowledge.paths)
                raise ConfigError(f"the knowledge base at {paths} has no articles to answer from")
            # What the service itself may say: its articles, its name and its own messages.
            bot = config.bot
            evidence = Evidence(await kb.texts()).add(
                [bot.name, bot.company, config.knowledge.dont_know_message]
            )
            gate = asyncio.Semaphore(max(1, concurrency))
            done = 0

            async def one(n: int, item: GoldenItem) -> Result:
                nonlocal done
                async with gate:
                    result = await _ask(service, kb, n, item, evidence)
                done += 1
                if progress is not None:
                    progress(done, len(items))
                return result

            return list(await asyncio.gather(*(one(n, i) for n, i in enumerate(items))))
        finally:
            await service.close()


async def _taught(config: Config) -> list[Snippet]:
    """The snippets staff approved in the service's own store: the evaluation's answers learn
    from them as the service's do (none when that store does not exist yet)."""
    if not config.store.url and not os.path.exists(config.store.path):  # noqa: ASYNC240 - once
        return []
    store = build_store(config)
    await store.open()
    try:
        return [snippet for snippet in await store.snippets() if snippet.learned]
    finally:
        await store.close()


async def _ask(
    service: Service, kb: KnowledgeBase, n: int, item: GoldenItem, evidence: Evidence
) -> Result:
    event = Event(
        platform="web",
        channel=f"eval-{n}",
        user=f"eval-{n}",
        text=item.question,
        message_id=f"eval-{n}",
        is_dm=True,
    )
    for turn in item.history:
        await service.store.append(event.key, turn.role, turn.content)
    began = time.monotonic()
    reply = _Collected(began)
    try:
        outcome, answer = await service.answer(event, reply)
        status = answer.outcome if answer is not None else outcome.value
    except Exception as exc:  # one broken answer is a row of the report, not the end of it
        answer, status = None, "failed"
        reply.text = reply.text or f"(failed: {type(exc).__name__}: {exc})"
    seconds = time.monotonic() - began
    previous = next((t.content for t in reversed(item.history) if t.role == "user"), None)
    retrieval = await kb.retrieve(item.question, previous)
    judgement = retrieval.judgement
    said = evidence.plus([item.question, *(turn.content for turn in item.history)])
    return Result(
        item=item,
        answer=reply.text,
        outcome=status,
        sources=answer.sources if answer is not None else (),
        retrieved=tuple(hit.passage.source for hit in retrieval.hits),
        unsupported=tuple(unsupported(strip_sources(reply.text), said)),
        first_text=reply.first if reply.first is not None else seconds,
        seconds=seconds,
        signals=judgement.signals if judgement is not None else None,
    )
