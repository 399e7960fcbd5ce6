"""Per-conversation context, answered strictly in arrival order.

Each conversation key has its own queue and, while it has work, its own worker task; different
conversations proceed in parallel and never share a lock around generation. The total number of
messages waiting is bounded: past it, the caller gets :class:`Busy` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bot.config import BotConfig, ModelConfig, PolicyConfig
from bot.errors import Busy, StoreError
from bot.events import ConversationKey, Event
from bot.generation.base import Backend, ChatMessage, GenerationParams
from bot.metrics import Metrics
from bot.reply import Reply
from bot.store import Status, Store, Turn
from bot.text import clean_output

__all__ = ["ConversationManager", "Prompt"]

log = logging.getLogger(__name__)

APOLOGY = "Sorry, something went wrong while I was answering. Please try again in a moment."
BUSY = "I'm answering a lot of questions right now. Please try again in a moment."
EMPTY_ANSWER = "Sorry, I don't have an answer to that. Could you rephrase the question?"
CUT_TO_WINDOW = "(Your message was too long for me to read whole; I answered its beginning.)"
SHUTTING_DOWN = "(I have to stop here: the service is restarting. Please ask again in a minute.)"
STORE_DOWN = (
    "Sorry, I can't save our conversation right now, so I can't answer safely."
    " Please try again in a few minutes."
)


@dataclass(frozen=True)
class Prompt:
    messages: list[ChatMessage]
    cut: bool = False


@dataclass(eq=False)
class _Job:
    event: Event
    text: str
    reply: Reply
    notes: list[str]
    settings: PolicyConfig | None
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ConversationManager:
    def __init__(
        self,
        store: Store,
        backend: Backend,
        bot: BotConfig,
        model: ModelConfig,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.metrics = metrics or Metrics()
        self.bot = bot
        self.params = GenerationParams(
            max_new_tokens=model.max_new_tokens, temperature=model.temperature, top_p=model.top_p
        )
        self._queues: dict[ConversationKey, deque[_Job]] = {}
        self._workers: dict[ConversationKey, asyncio.Task[None]] = {}
        self._pending = 0
        self._closed = False

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def system_prompt(self) -> str:
        return self.system_prompt_for(None)

    def system_prompt_for(self, settings: PolicyConfig | None) -> str:
        """The persona's system prompt, as the channel's policy sets it or by default."""
        template = (settings and settings.system_prompt) or self.bot.system_prompt
        name = (settings and settings.persona) or self.bot.name
        return template.format(name=name, company=self.bot.company)

    def params_for(self, settings: PolicyConfig | None) -> GenerationParams:
        if settings is None:
            return self.params
        changes: dict[str, float | int] = {}
        if settings.max_new_tokens > 0:
            changes["max_new_tokens"] = settings.max_new_tokens
        if settings.temperature >= 0:
            changes["temperature"] = settings.temperature
        return dataclasses.replace(self.params, **changes)  # type: ignore[arg-type]

    def submit(
        self,
        event: Event,
        text: str,
        reply: Reply,
        notes: Sequence[str] = (),
        settings: PolicyConfig | None = None,
    ) -> asyncio.Future[None]:
        """Queue a message; the returned future completes once it is answered."""
        if self._closed:
            raise Busy("the service is shutting down")
        if self._pending >= self.bot.max_pending:
            raise Busy("too many messages are waiting")
        job = _Job(event, text, reply, list(notes), settings)
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
                try:
                    await self._answer(job)
                except Exception:
                    log.exception("answering in %s failed", key)
                finally:
                    self._pending -= 1
                    if not job.done.done():
                        job.done.set_result(None)
        finally:
            # Jobs left behind by a cancelled worker are released, not silently kept.
            while queue:
                job = queue.popleft()
                self._pending -= 1
                job.done.cancel()
            del self._queues[key]
            del self._workers[key]

    async def close(self, grace: float = 10.0) -> None:
        """Stop taking messages, let the queued ones finish within ``grace`` seconds, then
        cancel the rest."""
        self._closed = True
        workers = list(self._workers.values())
        if not workers:
            return
        _, late = await asyncio.wait(workers, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def reset(self, key: ConversationKey) -> None:
        await self.store.reset(key)

    async def _history(self, key: ConversationKey) -> list[Turn]:
        history = await self.store.history(key, limit=self.bot.history_turns)
        expiry = self.bot.idle_expiry_minutes
        if history and expiry > 0:
            idle = datetime.now(UTC) - history[-1].created_at
            if idle > timedelta(minutes=expiry):
                await self.store.reset(key)
                return []
        return history

    async def _answer(self, job: _Job) -> None:
        event, reply = job.event, job.reply
        taken = time.monotonic()
        try:
            history = await self._history(event.key)
            await self.store.append(
                event.key, "user", job.text, user=event.user, message_id=event.message_id
            )
        except StoreError:
            log.exception("cannot record a message in %s", event.key)
            self.metrics.errors.labels("store").inc()
            await reply.fail(STORE_DOWN)
            return
        system = self.system_prompt_for(job.settings)
        prompt = await asyncio.to_thread(
            self.build_prompt, history, job.text, event.context, system
        )
        notes = [*job.notes, CUT_TO_WINDOW] if prompt.cut else job.notes
        await reply.start()
        parts: list[str] = []
        try:
            async with contextlib.aclosing(
                self.backend.stream(prompt.messages, self.params_for(job.settings))
            ) as deltas:
                async for delta in deltas:
                    if not parts:
                        self.metrics.first_token.observe(time.monotonic() - taken)
                    parts.append(delta)
                    await reply.update(clean_output("".join(parts)))
        except Busy:
            self.metrics.errors.labels("busy").inc()
            await reply.fail(BUSY)
            return
        except asyncio.CancelledError:
            # Shutdown past its grace period: keep what was written, tell the user why it ends.
            partial = await self._record_partial(event.key, parts, "partial")
            with contextlib.suppress(Exception):
                await asyncio.shield(reply.fail(f"{partial}\n\n{SHUTTING_DOWN}".strip()))
            raise
        except Exception:
            log.exception("generation failed in %s", event.key)
            self.metrics.errors.labels("generation").inc()
            partial = await self._record_partial(event.key, parts, "failed")
            await reply.fail(f"{partial}\n\n{APOLOGY}".strip())
            return
        answer = clean_output("".join(parts))
        self.metrics.tokens.inc(await asyncio.to_thread(self.backend.count_text, answer))
        await reply.finish("\n\n".join([answer or EMPTY_ANSWER, *notes]))
        self.metrics.reply_latency.observe(time.monotonic() - taken)
        # Recorded once posted, with the platform's id of the reply, which ratings refer to.
        reply_id = str(getattr(reply, "message_id", "") or "")
        try:
            await self.store.append(event.key, "assistant", answer, message_id=reply_id)
        except StoreError:
            log.exception("cannot record an answer in %s", event.key)
            self.metrics.errors.labels("store").inc()

    async def _record_partial(self, key: ConversationKey, parts: list[str], status: Status) -> str:
        partial = clean_output("".join(parts))
        try:
            await self.store.append(key, "assistant", partial, status=status)
        except StoreError:
            log.exception("cannot record a partial answer in %s", key)
        return partial

    def build_prompt(
        self,
        history: Sequence[Turn],
        text: str,
        context: str | None = None,
        system_prompt: str | None = None,
    ) -> Prompt:
        """System prompt + as many of the newest turns as fit + this message, so that prompt and
        reply fit the model's window. Blocking (tokenizes): run it off the event loop."""
        backend = self.backend
        budget = backend.context_window - self.params.max_new_tokens
        if context and not any(turn.content == context for turn in history):
            text = f'(Replying to this earlier message: "{context}")\n\n{text}'
        system = ChatMessage("system", system_prompt or self.system_prompt)
        current = ChatMessage("user", text)
        cut = False
        if backend.count_tokens([system, current]) > budget:
            overhead = backend.count_tokens([system, ChatMessage("user", "")])
            current = ChatMessage("user", backend.truncate(text, max(budget - overhead, 0)))
            cut = True
        turns = [ChatMessage(t.role, t.content) for t in history if t.content]

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
        return Prompt([system, *kept, current], cut)
