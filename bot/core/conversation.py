"""Per-conversation context, answered strictly in arrival order.

Each conversation key has its own queue and, while it has work, its own worker task; different
conversations proceed in parallel and never share a lock around generation. The total number of
messages waiting is bounded: past it, the caller gets :class:`Busy` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.config import BotConfig, ModelConfig, PolicyConfig
from bot.core.answer import Answer, Answerer, HandOff, Job
from bot.core.metrics import Metrics
from bot.core.reply import Reply
from bot.core.wording import STORE_DOWN
from bot.errors import Busy, StoreError
from bot.events import ConversationKey, Event
from bot.generation.base import Backend
from bot.storage.base import Store

if TYPE_CHECKING:
    from bot.knowledge.base import KnowledgeBase

__all__ = ["ConversationManager"]

log = logging.getLogger(__name__)


class ConversationManager:
    def __init__(
        self,
        store: Store,
        backend: Backend,
        bot: BotConfig,
        model: ModelConfig,
        metrics: Metrics | None = None,
        knowledge: KnowledgeBase | None = None,
        *,
        hand_off: HandOff | None = None,
        dont_knows_before_handoff: int = 0,
        file_tokens: int = 1000,
    ) -> None:
        self.store = store
        self.knowledge = knowledge
        self.metrics = metrics or Metrics()
        self.bot = bot
        self.answerer = Answerer(
            store,
            backend,
            bot,
            model,
            self.metrics,
            knowledge,
            hand_off=hand_off,
            dont_knows_before_handoff=dont_knows_before_handoff,
            file_tokens=file_tokens,
        )
        self._queues: dict[ConversationKey, deque[Job]] = {}
        self._workers: dict[ConversationKey, asyncio.Task[None]] = {}
        self._pending = 0
        self._closed = False

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def system_prompt(self) -> str:
        return self.answerer.system_prompt

    def submit(
        self,
        event: Event,
        text: str,
        reply: Reply,
        notes: Sequence[str] = (),
        settings: PolicyConfig | None = None,
        record: bool = True,
    ) -> asyncio.Future[Answer]:
        """Queue a message; the returned future resolves to its :class:`Answer` once it is
        answered (``record``: its answer joins the conversation; False for one written for the
        team)."""
        if self._closed:
            raise Busy("the service is shutting down")
        if self._pending >= self.bot.max_pending:
            raise Busy("too many messages are waiting")
        job = Job(event, text, reply, list(notes), settings, record)
        self._pending += 1
        self._queues.setdefault(event.key, deque()).append(job)
        if event.key not in self._workers:
            self._workers[event.key] = asyncio.create_task(
                self._work(event.key), name=f"conversation {event.key}"
            )
        return job.done

    async def _work(self, key: ConversationKey) -> None:
        queue = self._queues[key]
        try:
            while queue:
                job = queue.popleft()
                answer: Answer | None = Answer(job.text, "", "failed")
                try:
                    # Replicas sharing a store answer a conversation one message at a time.
                    async with self.store.conversation_lock(key):
                        answer = await self.answerer.answer(job)
                except StoreError:
                    # Taking the lock failed: the answerer deals with its own store faults.
                    log.exception("cannot take the conversation lock of %s", key)
                    self.metrics.errors.labels("store").inc()
                    with contextlib.suppress(Exception):
                        await job.reply.fail(STORE_DOWN)
                except Exception:
                    log.exception("answering in %s failed", key)
                except asyncio.CancelledError:
                    # Cut short (a shutdown past its grace): not answered, so the inbox keeps
                    # it for the restart to finish.
                    answer = None
                    raise
                finally:
                    self._pending -= 1
                    if not job.done.done():
                        if answer is None:
                            job.done.cancel()
                        else:
                            job.done.set_result(answer)
        finally:
            # Jobs left behind by a cancelled worker are released, not silently kept.
            while queue:
                job = queue.popleft()
                self._pending -= 1
                job.done.cancel()
            del self._queues[key]
            del self._workers[key]

    async def start(self) -> None:
        """Open the knowledge base, if any (ingesting what changed since the last start)."""
        if self.knowledge is not None:
            try:
                await self.knowledge.start()
            except BaseException:
                await self.knowledge.close()
                raise

    async def close(self, grace: float = 10.0) -> None:
        """Stop taking messages, let the queued ones finish within ``grace`` seconds, then
        cancel the rest."""
        self._closed = True
        workers = list(self._workers.values())
        if workers:
            _, late = await asyncio.wait(workers, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self.knowledge is not None:
            await self.knowledge.close()

    async def reset(self, key: ConversationKey) -> None:
        await self.store.reset(key)

    def cancel(self, key: ConversationKey) -> bool:
        """Stop answering in ``key`` because its reader went away (a closed web page): the
        answer being written stops, what it had is kept as partial, and messages queued there
        are dropped. ``Service.handle`` shields its wait, so cancelling the caller does not."""
        worker = self._workers.get(key)
        if worker is None:
            return False
        worker.cancel()
        return True
