"""Answering one message, from recording it to the posted, recorded answer: small talk, the
knowledge base's quoted sentences, a don't-know (or a person), or the model's checked answer
streamed into the reply."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from bot.config import BotConfig, ModelConfig, PolicyConfig
from bot.core.attachments import split_files, with_files
from bot.core.metrics import Metrics
from bot.core.prompt import Prompt, build_prompt
from bot.core.reply import Reply, reply_id
from bot.core.small_talk import reply_to, small_talk
from bot.core.text import clean_output
from bot.core.wording import (
    APOLOGY,
    BUSY,
    CAN_HELP_WITH,
    CUT_TO_WINDOW,
    EMPTY_ANSWER,
    FILE_CUT,
    FILE_RECEIVED,
    OFFER_A_PERSON,
    SHUTTING_DOWN,
    STORE_DOWN,
)
from bot.errors import Busy, StoreError
from bot.events import Attachment, ConversationKey, Event
from bot.generation.base import Backend, GenerationParams
from bot.knowledge.cite import cited_sources, format_sources, strip_sources
from bot.knowledge.claims import Evidence, StreamCheck
from bot.knowledge.grounding import Extract, compose
from bot.knowledge.index import Source
from bot.knowledge.retrieve import Retrieval
from bot.storage.base import Status, Store, Timing, Turn

if TYPE_CHECKING:
    from bot.knowledge.base import KnowledgeBase

__all__ = ["Answer", "Answerer", "HandOff", "Job"]

log = logging.getLogger(__name__)

#: Files searched for a question: its own, then the conversation's newest.
FILES_SEARCHED = 3

#: Hands a conversation to a person: (conversation, reply, reason, the answer leading there).
HandOff = Callable[[ConversationKey, Reply, str, str], Awaitable[None]]


@dataclass(frozen=True)
class Answer:
    """How a message was answered: what ``submit``'s future resolves to.

    ``dont_know``: nothing in the knowledge base answered it and the bot said so without
    calling the model (handoff counts these); ``sources``: the documents the reply lists.
    """

    question: str
    text: str
    outcome: Literal["answered", "dont_know", "failed", "busy"] = "answered"
    sources: tuple[Source, ...] = ()


@dataclass(eq=False)
class Job:
    """One message waiting to be answered, and the future its caller awaits."""

    event: Event
    text: str
    reply: Reply
    notes: list[str]
    settings: PolicyConfig | None
    #: False: the answer is written for the team (policy ``autonomy``), not the conversation.
    record: bool = True
    done: asyncio.Future[Answer] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    #: When answering began, and when the customer first saw text (``time.monotonic()``).
    taken: float = field(default=0.0, init=False)
    first_text: float | None = field(default=None, init=False)

    def timing(self) -> Timing:
        """Seconds to the first text shown (the whole answer when it came at once), and to now."""
        now = time.monotonic()
        return Timing((self.first_text or now) - self.taken, now - self.taken)


class Answerer:
    """Answers one message: records it, reads the conversation, asks the knowledge base,
    then quotes it, says it doesn't know, or streams the model's checked answer."""

    def __init__(
        self,
        store: Store,
        backend: Backend,
        bot: BotConfig,
        model: ModelConfig,
        metrics: Metrics,
        knowledge: KnowledgeBase | None = None,
        *,
        hand_off: HandOff | None = None,
        dont_knows_before_handoff: int = 0,
        file_tokens: int = 1000,
    ) -> None:
        self.store = store
        self.backend = backend
        self.knowledge = knowledge
        self.metrics = metrics
        self.bot = bot
        self.params = GenerationParams(
            max_new_tokens=model.max_new_tokens,
            temperature=model.temperature,
            top_p=model.top_p,
            repetition_penalty=model.repetition_penalty,
        )
        #: Called instead of a plain don't-know once there have been
        #: ``dont_knows_before_handoff`` of them in a row (0: never).
        self.hand_off = hand_off
        self.dont_knows_before_handoff = dont_knows_before_handoff
        #: Tokens of an attached file's text kept with its turn.
        self.file_tokens = file_tokens

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

    async def _history(self, key: ConversationKey) -> list[Turn]:
        history = await self.store.history(key, limit=self.bot.history_turns)
        expiry = self.bot.idle_expiry_minutes
        if history and expiry > 0:
            idle = datetime.now(UTC) - history[-1].created_at
            if idle > timedelta(minutes=expiry):
                await self.store.reset(key)
                return []
        return history

    async def answer(self, job: Job) -> Answer:
        """Answer ``job`` (under its conversation's lock) and record the exchange."""
        event, reply = job.event, job.reply
        taken = job.taken = time.monotonic()
        files: list[Attachment] = []
        if event.files:
            files, notices = await asyncio.to_thread(self._fit_files, event.files)
            job.notes = [*notices, *job.notes]
        said = with_files(job.text, files)
        try:
            history = await self._history(event.key)
            # The same question, recorded and left unanswered (a crash before the answer, now
            # answered after the restart), is not recorded twice.
            if history and history[-1].role == "user" and history[-1].content == said:
                history = history[:-1]
            else:
                await self.store.append(
                    event.key, "user", said, user=event.user, message_id=event.message_id
                )
        except StoreError:
            log.exception("cannot record a message in %s", event.key)
            self.metrics.errors.labels("store").inc()
            await reply.fail(STORE_DOWN)
            return Answer(job.text, STORE_DOWN, "failed")
        if not job.text.strip():
            # Only files: they are in the conversation now, for the question to come.
            names = ", ".join(file.name for file in files)
            return await self._say(job, FILE_RECEIVED.format(names=names))
        # With a knowledge base, "thanks!" gets a written reply: no search, no don't-know.
        chat = small_talk(job.text) if self.knowledge is not None and not files else None
        if chat is not None:
            return await self._small_talk(job, chat)
        retrieval = await self._retrieve(job, history, files)
        if retrieval is not None and not retrieval.confident:
            return await self._dont_know(job, retrieval)
        # Outside the "free" answer mode the answer rests on the sentences found, only.
        found = retrieval.extract if retrieval is not None else None
        if found is not None and not found.sentences:
            return await self._dont_know(job, retrieval)
        mode = self.knowledge.config.answer_mode if self.knowledge is not None else "free"
        if found is not None and mode == "extractive":
            return await self._quote(job, found, taken)
        system = self.system_prompt_for(job.settings)
        prompt = await asyncio.to_thread(
            self.build_prompt, history, said, event.context, system, retrieval, found
        )
        # Outside "free", whatever the model writes is checked: against the sentences found,
        # or, with an empty knowledge base, against the conversation alone.
        checker = None
        if mode != "free" and self.knowledge is not None:
            checker = StreamCheck(self._evidence(found, history, said, system))
        notes = [*job.notes, CUT_TO_WINDOW] if prompt.cut else job.notes
        await reply.start()
        parts: list[str] = []
        shown = ""
        try:
            async with contextlib.aclosing(
                self.backend.stream(prompt.messages, self.params_for(job.settings))
            ) as deltas:
                async for delta in deltas:
                    if not parts:
                        self.metrics.first_token.observe(time.monotonic() - taken)
                    parts.append(delta)
                    written = clean_output("".join(parts))
                    # Checked text is shown a whole sentence at a time, never an invention.
                    now = checker.update(written) if checker is not None else written
                    if now != shown:
                        shown = now
                        await reply.update(shown)
                        job.first_text = job.first_text or time.monotonic()
        except Busy:
            self.metrics.errors.labels("busy").inc()
            await reply.fail(BUSY)
            return Answer(job.text, BUSY, "busy")
        except asyncio.CancelledError:
            # Shutdown past its grace period: keep what was shown, tell the user why it ends.
            partial = await self._record_partial(job, shown, "partial")
            with contextlib.suppress(Exception):
                await asyncio.shield(reply.fail(f"{partial}\n\n{SHUTTING_DOWN}".strip()))
            raise
        except Exception:
            log.exception("generation failed in %s", event.key)
            self.metrics.errors.labels("generation").inc()
            partial = await self._record_partial(job, shown, "failed")
            await reply.fail(f"{partial}\n\n{APOLOGY}".strip())
            return Answer(job.text, partial, "failed")
        answer = clean_output("".join(parts))
        self.metrics.tokens.inc(await asyncio.to_thread(self.backend.count_text, answer))
        cited: list[Source | tuple[Source, str]] = []
        sources: tuple[Source, ...] = ()
        if checker is not None:
            checked = checker.final(answer)
            if checked.dropped:
                self.metrics.claims_dropped.inc(len(checked.dropped))
                log.info(
                    "dropped %d sentence(s) with unsupported specifics in %s: %s",
                    len(checked.dropped),
                    event.key,
                    "; ".join(", ".join(s.text for s in missing) for _, missing in checked.dropped),
                )
            answer = checked.text
            if not answer:
                return await self._dont_know(job, retrieval)
            if found is not None:
                cited, sources = list(found.sections), found.sources
        elif retrieval is not None and answer and self.knowledge is not None:
            config = self.knowledge.config
            listed = cited_sources(retrieval, config.max_sources, config.min_score)
            sources = tuple(s for s in listed if s in prompt.sources)
            cited = list(sources)
        shown = "\n\n".join(part for part in (answer, format_sources(cited)) if part)
        await reply.finish("\n\n".join([shown or EMPTY_ANSWER, *notes]))
        self.metrics.reply_latency.observe(time.monotonic() - taken)
        await self._record_answer(job, shown)
        return Answer(job.text, shown, "answered", sources)

    async def _small_talk(self, job: Job, kind: str) -> Answer:
        name = (job.settings and job.settings.persona) or self.bot.name
        return await self._say(job, reply_to(kind, name, self.bot.company))

    async def _say(self, job: Job, text: str) -> Answer:
        """Answer in the bot's own words (small talk, a file received), with the notes."""
        await job.reply.finish("\n\n".join([text, *job.notes]))
        await self._record_answer(job, text)
        return Answer(job.text, text, "answered")

    async def _quote(self, job: Job, found: Extract, taken: float) -> Answer:
        """The extractive answer: the knowledge base's own sentences, and where they are from."""
        shown = "\n\n".join(
            part for part in (compose(found), format_sources(found.sections)) if part
        )
        await job.reply.finish("\n\n".join([shown, *job.notes]))
        self.metrics.first_token.observe(time.monotonic() - taken)
        self.metrics.reply_latency.observe(time.monotonic() - taken)
        await self._record_answer(job, shown)
        return Answer(job.text, shown, "answered", found.sources)

    def _fit_files(self, files: Sequence[Attachment]) -> tuple[list[Attachment], list[str]]:
        """The readable files, each cut to :attr:`file_tokens`, and the notices for the
        customer (the files not read, the ones cut). Blocking (tokenizes)."""
        kept: list[Attachment] = []
        notices: dict[str, None] = {}
        for file in files:
            if file.notice:
                notices[file.notice] = None
            if not file.text:
                continue
            text = self.backend.truncate(file.text, self.file_tokens)
            if len(text) < len(file.text):
                notices[FILE_CUT.format(name=file.name)] = None
            kept.append(Attachment(file.name, text))
        return kept, list(notices)

    def _evidence(
        self, found: Extract | None, history: Sequence[Turn], text: str, system: str
    ) -> Evidence:
        """What the model's claims may rest on: the sentences it was given, the conversation,
        the customer's words and its own persona."""
        said = [strip_sources(turn.content) for turn in history]
        quoted = [compose(found)] if found is not None else []
        return Evidence([*quoted, *said, text, system, self.bot.name, self.bot.company])

    async def _retrieve(
        self, job: Job, history: Sequence[Turn], files: Sequence[Attachment]
    ) -> Retrieval | None:
        """The passages for this message, in the knowledge base and the customer's files
        (this message's, then the conversation's newest); None when the knowledge base has no
        say in it (none configured, or an empty index and no file)."""
        knowledge = self.knowledge
        asked = [split_files(t.content) for t in reversed(history) if t.role == "user"]
        files = [*files, *(file for _, earlier in asked for file in earlier)][:FILES_SEARCHED]
        if knowledge is None or not (knowledge.size or files):
            return None
        previous = next((question for question, _ in asked if question), None)
        collections = job.settings.knowledge if job.settings else []
        try:
            return await knowledge.retrieve(job.text, previous, collections, files)
        except Exception:
            # Answering without the documents would invite made-up policies: say "don't know".
            log.exception("knowledge retrieval failed in %s", job.event.key)
            self.metrics.errors.labels("knowledge").inc()
            return Retrieval(job.text, (), False)

    def _dont_know_text(self, retrieval: Retrieval | None) -> str:
        """The don't-know, and in one line what the bot can help with: the configured topics,
        else the titles of the articles closest to the question."""
        assert self.knowledge is not None
        config = self.knowledge.config
        topics = list(config.help_topics)
        if not topics and retrieval is not None:
            topics = list(dict.fromkeys(s.title for s in retrieval.sources() if s.title))[:3]
        if not topics and self.bot.company:
            topics = [self.bot.company]
        if not topics:
            return config.dont_know_message
        listed = topics[0] if len(topics) == 1 else f"{', '.join(topics[:-1])} and {topics[-1]}"
        return f"{config.dont_know_message}\n{CAN_HELP_WITH.format(topics=listed)}"

    async def _dont_know(self, job: Job, retrieval: Retrieval | None = None) -> Answer:
        """Say so, with what the bot can help with; recorded as a don't-know, which `parley
        report` lists as a gap in the knowledge base. Offers a person, or hands over to one
        after ``dont_knows_before_handoff`` of them in a row."""
        text = self._dont_know_text(retrieval)
        limit = self.dont_knows_before_handoff
        # An answer written only for the team hands nothing over: nobody was told anything.
        if self.hand_off is not None and limit > 0 and job.record:
            before = await self._dont_knows_in_a_row(job.event.key, limit)
            if before + 1 >= limit:
                await self.hand_off(job.event.key, job.reply, "didn't know, again", text)
                await self._record_answer(job, text, "dont_know")
                return Answer(job.text, text, "dont_know")
        if self.hand_off is not None:
            text = f"{text}\n{OFFER_A_PERSON}"
        await job.reply.finish("\n\n".join([text, *job.notes]))
        await self._record_answer(job, text, "dont_know")
        return Answer(job.text, text, "dont_know")

    async def _dont_knows_in_a_row(self, key: ConversationKey, limit: int) -> int:
        """How many of the bot's latest answers here were don't-knows, up to ``limit``."""
        try:
            turns = await self.store.history(key, limit=2 * limit + 1)
        except StoreError:
            return 0
        count = 0
        for turn in reversed([t for t in turns if t.role == "assistant"]):
            if turn.status != "dont_know":
                break
            count += 1
        return count

    async def _record_answer(self, job: Job, text: str, status: Status = "complete") -> None:
        # Recorded once posted, with the platform's id of the reply, which ratings refer to.
        if not job.record:
            return
        try:
            await self.store.append(
                job.event.key,
                "assistant",
                text,
                status=status,
                message_id=reply_id(job.reply),
                timing=job.timing(),
            )
        except StoreError:
            log.exception("cannot record an answer in %s", job.event.key)
            self.metrics.errors.labels("store").inc()

    async def _record_partial(self, job: Job, partial: str, status: Status) -> str:
        if not job.record:
            return partial
        try:
            await self.store.append(job.event.key, "assistant", partial, status=status)
        except StoreError:
            log.exception("cannot record a partial answer in %s", job.event.key)
        return partial

    def build_prompt(
        self,
        history: Sequence[Turn],
        text: str,
        context: str | None = None,
        system_prompt: str | None = None,
        retrieval: Retrieval | None = None,
        found: Extract | None = None,
    ) -> Prompt:
        """The prompt for ``text`` after ``history``, trimmed to the model's window
        (bot/core/prompt.py). Blocking (tokenizes): run it off the event loop."""
        return build_prompt(
            self.backend,
            self.params.max_new_tokens,
            system_prompt or self.system_prompt,
            history,
            text,
            context,
            retrieval,
            found,
        )
