"""The core's front door: ``Service.handle(event, reply)`` decides whether and how to answer.

Gatekeeping happens here, once for every platform: is the bot addressed, is this a duplicate
delivery, is the text usable, is it a command (reset, help)? What passes goes to the
conversation manager.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING

from bot.config import Config, PolicyConfig, load_config
from bot.core.conversation import BUSY, STORE_DOWN, Answer, ConversationManager
from bot.core.metrics import Metrics
from bot.core.policy import Decision, Policy, Verdict
from bot.core.ratelimit import Limit, RateLimiter
from bot.core.reply import Reply
from bot.core.small_talk import accepts
from bot.core.text import clean_input, cut
from bot.errors import Busy, ConfigError, StoreError
from bot.events import ConversationKey, Event
from bot.generation.base import Backend
from bot.storage.base import Rating, Store

if TYPE_CHECKING:
    from bot.knowledge.base import KnowledgeBase

__all__ = ["Outcome", "Service"]

log = logging.getLogger(__name__)

EMPTY_HINT = "Please type your question and I'll do my best to help (say 'help' for more)."
RESET_DONE = "Done: I've forgotten our conversation here. What can I help you with?"
TOO_LONG = "(Your message was longer than {limit:,} characters, so I only read the beginning.)"
SLOW_DOWN = "You're sending messages faster than I can answer. Please wait about {seconds} s."
HANDOFF = (
    "I've asked a member of our support team to take over; they'll answer you here."
    " I'll stay quiet in this conversation until then."
)
RESUMED = "Thanks, I'm back. Ask me anything else you need."
QUOTA = (
    "You've reached today's limit of {quota} questions. It resets at midnight UTC;"
    " for anything urgent, say 'human' to reach our support team."
)
# Platforms redeliver within minutes (Slack retries, a Discord RESUME); a day is ample.
DEDUP_SECONDS = 86400.0
TOO_LATE = (
    "Sorry, I couldn't answer this when you asked: I was restarting. If you still need help,"
    " please ask again."
)
COMMANDS = {
    "human": "human",
    "!human": "human",
    "/human": "human",
    "agent": "human",
    "resume": "resume",
    "!resume": "resume",
    "/resume": "resume",
    "reset": "reset",
    "!reset": "reset",
    "/reset": "reset",
    "help": "help",
    "!help": "help",
    "/help": "help",
}


class Outcome(Enum):
    """What ``handle`` did with an event (for adapters' logs, metrics and tests)."""

    ANSWERED = "answered"
    IGNORED = "ignored"
    DUPLICATE = "duplicate"
    HINTED = "hinted"
    COMMAND = "command"
    BUSY = "busy"
    RATE_LIMITED = "rate_limited"
    HANDED_OFF = "handed_off"
    DENIED = "denied"
    QUOTA = "quota"
    LOOP_STOPPED = "loop_stopped"


#: Builds the reply that answers an event after a restart: (event, id of the message its answer
#: was already posted in, or '').
Resume = Callable[[Event, str], Reply]


@dataclass(frozen=True, slots=True)
class Admission:
    """What :meth:`Service.admit` made of an event: an ``outcome`` when it stops there, else
    the policy's ``decision``, and whether it is ``durable`` (taken into the inbox)."""

    outcome: Outcome | None
    decision: Decision | None = None
    durable: bool = False


def _lease(marker: str) -> str:
    return f"lease/{marker}"


def _reply_id(reply: Reply) -> str:
    return str(getattr(reply, "message_id", "") or "")


class Service:
    def __init__(
        self,
        config: Config,
        backend: Backend,
        store: Store,
        knowledge: KnowledgeBase | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.store = store
        self.metrics = Metrics()
        self.conversations = ConversationManager(
            store, backend, config.bot, config.model, self.metrics, knowledge
        )
        # Repeated don't-knows hand the customer to a person instead of a third shrug.
        self.conversations.hand_off = self.hand_off
        self.conversations.dont_knows_before_handoff = config.handoff.dont_knows_in_a_row
        self.metrics.watch(
            lambda: self.conversations.pending, lambda: getattr(backend, "in_flight", 0)
        )
        limits = config.limits
        self.limiter = RateLimiter(
            limits.user_per_minute,
            limits.user_burst,
            limits.channel_per_minute,
            limits.channel_burst,
            limits.bot_messages_per_channel_minute,
            # With the Redis store, the limits hold across the replicas sharing it.
            shared=store if store.shares_limits else None,
        )
        # Answers given in a row to other bots, per conversation: a loop breaker.
        self._bot_turns: dict[ConversationKey, int] = {}
        self.policy = Policy(config.policy)
        #: The time quotas are counted by (replaceable in tests).
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._quota_told: set[tuple[str, str, str, date]] = set()
        self._started = False
        #: Platforms whose events are durable, and how each resumes one (resumable()).
        self.resumers: dict[str, Resume] = {}
        #: Durable events being answered by this process (recover() leaves them be).
        self._answering: set[str] = set()
        #: How long the lease of an answer in progress lasts unless renewed.
        self.lease_seconds = config.store.lock_ttl

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("service already started")
        self._started = True
        await self.store.open()
        try:
            await self.backend.start()
        except BaseException:
            await self.store.close()
            raise
        try:
            await self.conversations.start()
        except BaseException:
            await self.backend.close()
            await self.store.close()
            raise

    async def close(self, grace: float = 10.0) -> None:
        """Stop taking messages, let replies in flight finish within ``grace`` seconds, close."""
        await self.conversations.close(grace)
        # Answers cut short stay in the inbox; their leases go, so the restart takes them at
        # once rather than when the leases lapse.
        for marker in list(self._answering):
            await self._inbox(self.store.release(_lease(marker)))
        await self.backend.close()
        await self.store.close()

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def help_text(self) -> str:
        bot = self.config.bot
        return (
            f"I'm {bot.name}, {bot.company}'s support assistant. Ask me a question in plain words "
            "and I'll answer here. Say 'reset' to make me forget this conversation."
        )

    async def _duplicate(self, event: Event) -> bool:
        if not event.message_id:
            return False
        marker = "/".join((event.platform, event.workspace, event.channel, event.message_id))
        try:
            return not await self.store.claim(marker, DEDUP_SECONDS)
        except StoreError:
            log.exception("cannot check %s for a repeated delivery", marker)
            return False

    async def handle(
        self, event: Event, reply: Reply, admission: Admission | None = None
    ) -> Outcome:
        """Answer ``event`` through ``reply``; returns once the answer is finished."""
        outcome, _ = await self.answer(event, reply, admission=admission)
        return outcome

    async def answer(
        self,
        event: Event,
        reply: Reply,
        *,
        recovered: bool = False,
        admission: Admission | None = None,
    ) -> tuple[Outcome, Answer | None]:
        """As :meth:`handle`, with the :class:`Answer` when the conversation manager gave one
        (``parley eval`` reads its outcome and sources). ``admission``: what :meth:`admit`
        said already (an adapter that must take the event in before acknowledging it);
        ``recovered``: an inbox entry answered after a restart."""
        if admission is None:
            admission = await self.admit(event, recovered)
        if admission.outcome is not None:
            outcome, answer = admission.outcome, None
        elif not admission.durable:
            outcome, answer = await self._respond(event, reply, admission.decision)
        else:
            if hasattr(reply, "on_posted"):
                reply.on_posted = lambda: self._inbox(
                    self.store.inbox_mark(event.marker, "answering", _reply_id(reply))
                )
            holding = asyncio.create_task(self._hold(event.marker))
            try:
                outcome, answer = await self._respond(event, reply, admission.decision)
            finally:
                holding.cancel()
            # (Cut short, it stays among those answering: close() lets its lease go.)
            self._answering.discard(event.marker)
            await self._inbox(self.store.inbox_mark(event.marker, "answered", _reply_id(reply)))
        self.metrics.events.labels(event.platform, outcome.value).inc()
        return outcome, answer

    async def admit(self, event: Event, recovered: bool = False) -> Admission:
        """Whether ``event`` is answered at all (policy, repeated deliveries, bot loops); one
        that is, on a durable platform, is taken into the inbox first, so that a crash before
        its answer is finished leaves it there for the restart to answer (:meth:`recover`)."""
        if event.from_bot and event.user not in self.config.limits.allow_bots:
            return Admission(Outcome.IGNORED)
        decision = await self._decide(event)
        if not decision.answer:
            if decision.verdict is Verdict.NOT_TRIGGERED:
                return Admission(Outcome.IGNORED)
            # Silence: an error message would only invite retries.
            log.info("not answering %s in %s: %s", event.user, event.key, decision.reason)
            self.metrics.denied.labels(decision.verdict.value).inc()
            return Admission(Outcome.DENIED)
        durable = bool(event.marker) and event.platform in self.resumers
        if durable:
            # Before the claim below: a crash between the two leaves it to be answered once,
            # by the platform's redelivery or by the recovery, whichever comes first.
            await self._inbox(self.store.inbox_add(event))
        # (A recovered event claims its delivery too, so that a redelivery is a duplicate.)
        if await self._duplicate(event) and not recovered:
            log.info("ignoring a repeated delivery of %s", event.message_id)
            return Admission(Outcome.DUPLICATE)
        if not self._loop_guard(event):
            log.warning(
                "not answering bot %s in %s: too many bot turns in a row", event.user, event.key
            )
            if durable:
                await self._inbox(self.store.inbox_mark(event.marker, "answered"))
            return Admission(Outcome.LOOP_STOPPED)
        if durable:
            # The lease says someone alive is answering it: a recovery leaves it be. (A
            # recovered event holds the lease its recovery took.)
            if not recovered and not await self._take_lease(event.marker):
                return Admission(Outcome.DUPLICATE)
            self._answering.add(event.marker)
        return Admission(None, decision, durable)

    async def _take_lease(self, marker: str) -> bool:
        try:
            return await self.store.claim(_lease(marker), self.lease_seconds)
        except StoreError:
            log.exception("cannot take the lease of %s", marker)
            return True  # answer it; only its recovery after a crash is at risk

    async def _hold(self, marker: str) -> None:
        """Renew the lease of an answer in progress until it ends: a process that dies lets
        it lapse within ``store.lock_ttl``, and the others' recovery takes the entry then."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            await self._inbox(self.store.extend(_lease(marker), self.lease_seconds))

    def _loop_guard(self, event: Event) -> bool:
        """False when this is one bot answer too many in a row in this conversation."""
        if not event.from_bot:
            self._bot_turns.pop(event.key, None)
            return True
        turns = self._bot_turns.get(event.key, 0)
        if turns >= self.config.limits.bot_turns_in_a_row:
            return False
        self._bot_turns[event.key] = turns + 1
        return True

    async def _decide(self, event: Event) -> Decision:
        in_thread = False
        if not event.addressed and event.thread is not None:
            try:
                turns = await self.store.history(event.key, limit=self.config.bot.history_turns)
                in_thread = any(turn.role == "assistant" for turn in turns)
            except StoreError:
                log.exception("cannot read %s", event.key)
        return self.policy.decide(event, bot_in_thread=in_thread)

    def reload_policy(self, path: str | None = None) -> str | None:
        """Re-read the policy from the config file; on an error keep the old one and say why."""
        try:
            config = load_config(path if path is not None else self.config.source_path)
        except ConfigError as exc:
            log.error("policy not reloaded, the old one stays: %s", exc)
            return str(exc)
        self.policy = Policy(config.policy)
        log.info("policy reloaded from %s", config.source)
        return None

    async def _over_quota(self, event: Event, settings: PolicyConfig, reply: Reply) -> bool:
        if settings.quota <= 0:
            return False
        today = self.clock().replace(hour=0, minute=0, second=0, microsecond=0)
        try:
            asked = await self.store.count_questions(
                event.platform, event.workspace, event.user, today
            )
        except StoreError:
            return False  # the store's own failure is reported when the message is recorded
        if asked < settings.quota:
            return False
        marker = (event.platform, event.workspace, event.user, today.date())
        if marker not in self._quota_told:
            # Yesterday's notices are spent: keep the set from growing day after day.
            self._quota_told = {m for m in self._quota_told if m[3] == today.date()}
            self._quota_told.add(marker)
            await reply.finish(QUOTA.format(quota=settings.quota))
        return True

    async def _inbox(self, write: Awaitable[None]) -> None:
        try:
            await write
        except StoreError:
            # The answer goes on: only its recovery after a crash is lost.
            log.exception("cannot record an event's progress in the inbox")
            self.metrics.errors.labels("store").inc()

    def resumable(self, platform: str, resume: Resume) -> None:
        """Make ``platform``'s events durable: ``resume(event, reply_id)`` gives the reply that
        answers an event after a restart, finishing the message ``reply_id`` when not ''."""
        self.resumers[platform] = resume

    async def keep_recovering(self, platform: str) -> None:
        """:meth:`recover` now, and again every ``store.lock_ttl`` until cancelled: an entry
        left by a process that died while answering it is taken once its lease lapses."""
        while True:
            try:
                await self.recover(platform)
            except Exception:
                log.exception("recovering the questions left unanswered failed")
            await asyncio.sleep(self.lease_seconds)

    async def recover(self, platform: str) -> int:
        """Answer ``platform``'s events taken in but not answered when the service last stopped
        (a crash, a kill, a deploy): oldest first, at most ``limits.recover_per_minute`` a
        minute; those older than ``limits.recover_within_minutes`` get an apology instead.
        Returns how many were answered or apologised to."""
        resume = self.resumers[platform]
        limits = self.config.limits
        try:
            waiting = [w for w in await self.store.inbox_waiting() if w.event.platform == platform]
        except StoreError:
            log.exception("cannot read the inbox: questions asked before the restart wait")
            return 0
        done = 0
        for entry in waiting:
            event = entry.event
            if event.marker in self._answering:
                continue  # delivered again since the restart, and being answered
            # Whoever holds its lease (a replica answering it, or recovering it) is alive: it is
            # theirs. One answered meanwhile (delivered again, caught up with) is left alone.
            try:
                if not await self.store.claim(_lease(event.marker), self.lease_seconds):
                    continue
                if await self.store.inbox_state(event.marker) in (None, "answered"):
                    await self.store.release(_lease(event.marker))
                    continue
            except StoreError:
                log.exception("cannot claim %s for recovery", event.marker)
                continue
            if done and limits.recover_per_minute > 0:
                await asyncio.sleep(60.0 / limits.recover_per_minute)
            reply = resume(event, entry.reply_id)
            age = datetime.now(UTC) - entry.received_at
            if limits.recover_within_minutes > 0 and age > timedelta(
                minutes=limits.recover_within_minutes
            ):
                log.info("apologising for %s, taken in %s ago", event.marker, age)
                await reply.finish(TOO_LATE)
                await self._inbox(self.store.inbox_mark(event.marker, "answered", _reply_id(reply)))
            else:
                log.info("answering %s, taken in before the restart", event.marker)
                await self.answer(event, reply, recovered=True)
            done += 1
        return done

    async def _respond(
        self, event: Event, reply: Reply, decision: Decision | None
    ) -> tuple[Outcome, Answer | None]:
        assert decision is not None
        text = clean_input(event.text)
        if await self._handed_off(event.key):
            return await self._while_handed_off(event, text, reply), None
        scope = (event.platform, event.workspace)
        verdict, wait = await self.limiter.admit((*scope, event.user), (*scope, event.channel))
        if verdict is not Limit.OK:
            if verdict is Limit.NOTIFY:
                await reply.finish(SLOW_DOWN.format(seconds=max(1, round(wait))))
            return Outcome.RATE_LIMITED, None
        if not text:
            await reply.finish(EMPTY_HINT)
            return Outcome.HINTED, None
        command = COMMANDS.get(text.lower())
        if command == "human" or self._asks_for_human(text):
            await self._record_quietly(event, text)
            await self.hand_off(event.key, reply, "asked for a human")
            return Outcome.HANDED_OFF, None
        if accepts(text) and await self._offered_a_person(event.key):
            await self._record_quietly(event, text)
            await self.hand_off(event.key, reply, "accepted the offer of a person")
            return Outcome.HANDED_OFF, None
        if command == "reset":
            await self.conversations.reset(event.key)
            await reply.finish(RESET_DONE)
            return Outcome.COMMAND, None
        if command == "help":
            await reply.finish(self.help_text)
            return Outcome.COMMAND, None
        if not decision.admin and await self._over_quota(event, decision.settings, reply):
            return Outcome.QUOTA, None
        if not await self.limiter.may_post((*scope, event.channel)):
            log.warning(
                "not answering in %s: the bot's per-minute message cap is reached", event.key
            )
            return Outcome.RATE_LIMITED, None
        limit = self.config.bot.max_message_chars
        text, was_cut = cut(text, limit)
        notes = [TOO_LONG.format(limit=limit)] if was_cut else []
        try:
            done = self.conversations.submit(event, text, reply, notes, decision.settings)
        except Busy:
            await reply.fail(BUSY)
            return Outcome.BUSY, None
        return Outcome.ANSWERED, await asyncio.shield(done)

    # -- handing a conversation to a human ------------------------------------------------------
    def _asks_for_human(self, text: str) -> bool:
        lowered = " ".join(text.lower().split())
        return any(phrase.lower() in lowered for phrase in self.config.handoff.phrases)

    async def _offered_a_person(self, key: ConversationKey) -> bool:
        """Whether the bot's last answer here was a don't-know, which offers a person."""
        try:
            turns = await self.store.history(key, limit=2)
        except StoreError:
            return False
        said = [turn for turn in turns if turn.role == "assistant"]
        return bool(said) and said[-1].status == "dont_know"

    def is_staff(self, event: Event) -> bool:
        handoff = self.config.handoff
        return event.user in handoff.staff_users or any(
            r in handoff.staff_roles for r in event.roles
        )

    async def _handed_off(self, key: ConversationKey) -> bool:
        try:
            since = await self.store.handoff_since(key)
            if since is None:
                return False
            quiet = timedelta(minutes=self.config.handoff.quiet_minutes)
            if datetime.now(UTC) - since < quiet:
                return True
            await self.store.end_handoff(key)
        except StoreError:
            log.exception("cannot read the handoff state of %s", key)
        return False

    async def hand_off(
        self, key: ConversationKey, reply: Reply, reason: str, lead: str = ""
    ) -> None:
        """Ask the staff to take over here and keep the bot quiet until they hand it back.

        An adapter whose reply has ``handoff(text)`` posts the text with the one mention the bot
        may make, its support team's; any other reply shows the text alone. ``lead`` comes
        first (the don't-know answer that led here)."""
        log.info("handing %s to a human: %s", key, reason)
        try:
            await self.store.start_handoff(key, reason)
        except StoreError:
            log.exception("cannot record the handoff of %s", key)
            self.metrics.errors.labels("store").inc()
            await reply.fail(STORE_DOWN)
            return
        text = f"{lead}\n\n{HANDOFF}" if lead else HANDOFF
        announce = getattr(reply, "handoff", None)
        await (announce(text) if announce is not None else reply.finish(text))

    async def _while_handed_off(self, event: Event, text: str, reply: Reply) -> Outcome:
        if self.is_staff(event) and COMMANDS.get(text.lower()) == "resume":
            await self.store.end_handoff(event.key)
            await reply.finish(RESUMED)
            return Outcome.COMMAND
        # Quiet, but the transcript stays whole for when the bot takes over again.
        if text:
            author = f"[staff {event.user_name or event.user}] " if self.is_staff(event) else ""
            await self._record_quietly(event, author + text)
        return Outcome.HANDED_OFF

    async def _record_quietly(self, event: Event, text: str) -> None:
        """Keep a message the bot does not answer in the transcript, if the store allows."""
        try:
            await self.store.append(
                event.key, "user", text, user=event.user, message_id=event.message_id
            )
        except StoreError:
            log.exception("cannot record a message in %s", event.key)

    # -- feedback ----------------------------------------------------------------------------
    async def feedback(
        self, scope: ConversationKey, reply_id: str, user: str, rating: Rating
    ) -> bool:
        """Record a 👍/👎 on the bot's answer ``reply_id`` in ``scope``'s channel."""
        try:
            return await self.store.add_feedback(scope, reply_id, user, rating)
        except StoreError:
            log.exception("cannot record feedback in %s", scope)
            self.metrics.errors.labels("store").inc()
            return False
