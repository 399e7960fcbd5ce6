"""The gate: the ordered checks an event walks down, once, before the conversation manager
answers it. Each check looks at the :class:`Ticket` (the event and what the checks before it
found) and either lets it pass (``None``) or stops it with the :class:`Outcome` the service
reports, having said whatever the user should hear.

Two stretches, because a platform that resumes answers must take an event in before it
acknowledges it (``Service.admit``) and answer it after (``Service.answer``):

- admission: addressed, permitted (the policy), taken in (the inbox), duplicate, bot loop,
  lease;
- answer: handed off, rate limit, clean input, command, quota, bot's message cap.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from functools import cached_property

from bot.core.handoff import Handoffs
from bot.core.metrics import Metrics
from bot.core.policy import Decision, Verdict
from bot.core.ratelimit import Limit, RateLimiter
from bot.core.reply import Reply
from bot.core.small_talk import accepts
from bot.core.text import clean_input
from bot.core.wording import EMPTY_HINT, QUOTA, RESET_DONE, SLOW_DOWN
from bot.errors import StoreError
from bot.events import ConversationKey, Event
from bot.storage.base import Store

__all__ = ["COMMANDS", "Check", "Gate", "Outcome", "Ticket"]

log = logging.getLogger(__name__)

# Platforms redeliver within minutes (Slack retries, a Discord RESUME); a day is ample.
DEDUP_SECONDS = 86400.0
COMMANDS = {
    **{
        f"{prefix}{word}": word
        for prefix in ("", "!", "/")
        for word in ("human", "resume", "reset", "help")
    },
    "agent": "human",
    # Staff marking a handed-off conversation done gives it back to the bot.
    **{f"{prefix}resolved": "resume" for prefix in ("", "!", "/")},
}


class Outcome(Enum):
    """What the service did with an event (for adapters' logs, metrics and tests)."""

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
    #: Answered for the team only (policy ``autonomy = "shadow"``): nothing was posted.
    SHADOWED = "shadowed"
    #: Answered into a draft for staff to approve (``autonomy = "draft"``).
    DRAFTED = "drafted"


@dataclass
class Ticket:
    """One event on its way down the gate, and what the checks found so far."""

    event: Event
    #: Answering an inbox entry after a restart (its delivery and lease are already claimed).
    recovered: bool = False
    #: The policy's decision (the addressed check makes it).
    decision: Decision | None = None
    #: Taken into the inbox: its answer survives a crash.
    durable: bool = False
    #: Where the answer goes (the answer stretch only).
    reply: Reply | None = None
    #: The check that stopped it, if one did.
    stopped_by: str = ""

    @cached_property
    def text(self) -> str:
        """The user's words, cleaned (bot/core/text.py)."""
        return clean_input(self.event.text)

    @property
    def answer_to(self) -> Reply:
        assert self.reply is not None, "an answer-stretch check without a reply"
        return self.reply


Check = Callable[[Ticket], Awaitable["Outcome | None"]]


@dataclass
class Gate:
    """Named checks in order; :meth:`walk` stops at the first that stops the ticket."""

    checks: Sequence[tuple[str, Check]]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.checks]

    async def walk(self, ticket: Ticket) -> Outcome | None:
        for name, check in self.checks:
            outcome = await check(ticket)
            if outcome is not None:
                ticket.stopped_by = name
                return outcome
        return None


# -- admission ----------------------------------------------------------------------------------


@dataclass
class Addressed:
    """Is the bot meant to answer: not a bot it ignores, and the policy's trigger fires (a
    mention, a DM, a question, a thread the bot is in). Makes the policy's decision."""

    decide: Callable[[Event, bool], Decision]
    store: Store
    allow_bots: Sequence[str]
    history_turns: int

    async def __call__(self, ticket: Ticket) -> Outcome | None:
        event = ticket.event
        if event.from_bot and event.user not in self.allow_bots:
            return Outcome.IGNORED
        in_thread = False
        if not event.addressed and event.thread is not None:
            try:
                turns = await self.store.history(event.key, limit=self.history_turns)
                in_thread = any(turn.role == "assistant" for turn in turns)
            except StoreError:
                log.exception("cannot read %s", event.key)
        ticket.decision = self.decide(event, in_thread)
        if ticket.decision.verdict is Verdict.NOT_TRIGGERED:
            return Outcome.IGNORED
        return None


@dataclass
class Permitted:
    """The policy allows this user here (allow and deny lists, roles, channels)."""

    metrics: Metrics

    async def __call__(self, ticket: Ticket) -> Outcome | None:
        decision, event = ticket.decision, ticket.event
        assert decision is not None
        if decision.answer:
            return None
        # Silence: an error message would only invite retries.
        log.info("not answering %s in %s: %s", event.user, event.key, decision.reason)
        self.metrics.denied.labels(decision.verdict.value).inc()
        return Outcome.DENIED


@dataclass
class TakenIn:
    """On a platform that resumes answers, the event goes into the store's inbox: a crash
    before its answer is finished leaves it there for the restart. Never stops a ticket."""

    store: Store
    resumable: Callable[[str], bool]
    record: Callable[[Awaitable[None]], Awaitable[None]]

    async def __call__(self, ticket: Ticket) -> Outcome | None:
        event = ticket.event
        ticket.durable = bool(event.marker) and self.resumable(event.platform)
        if ticket.durable:
            # Before the duplicate check's claim: a crash between the two leaves it to be
            # answered once, by the platform's redelivery or the recovery, whichever is first.
            await self.record(self.store.inbox_add(event))
        return None


@dataclass
class Duplicate:
    """A delivery already seen (a Slack retry, a Discord RESUME replay) is not answered twice.
    A recovered event claims its delivery too, so that a redelivery is the duplicate."""

    store: Store

    async def __call__(self, ticket: Ticket) -> Outcome | None:
        event = ticket.event
        if not event.message_id:
            return None
        marker = "/".join((event.platform, event.workspace, event.channel, event.message_id))
        try:
            repeated = not await self.store.claim(marker, DEDUP_SECONDS)
        except StoreError:
            log.exception("cannot check %s for a repeated delivery", marker)
            return None
        if repeated and not ticket.recovered:
            log.info("ignoring a repeated delivery of %s", event.message_id)
            return Outcome.DUPLICATE
        return None


@dataclass
class BotLoop:
    """Two bots answering each other forever: at most ``turns`` bot answers in a row."""

    turns: int
    store: Store
    record: Callable[[Awaitable[None]], Awaitable[None]]
    _in_a_row: dict[ConversationKey, int] = field(default_factory=dict)

    async def __call__(self, ticket: Ticket) -> Outcome | None:
        event = ticket.event
        if not event.from_bot:
            self._in_a_row.pop(event.key, None)
            return None
        count = self._in_a_row.get(event.key, 0)
        if count < self.turns:
            self._in_a_row[event.key] = count + 1
            return None
        log.warning(
            "not answering bot %s in %s: too many bot turns in a row", event.user, event.key
        )
        if ticket.durable:
            await self.record(self.store.inbox_mark(event.marker, "answered"))
        return Outcome.LOOP_STOPPED


@dataclass
class Lease:
    """Someone alive is answering a durable event while they hold its lease: a recovery
    leaves it be, and another replica's delivery is a duplicate. (A recovered event holds the
    lease its recovery took.)"""

    take: Callable[[str], Awaitable[bool]]
    answering: set[str]

    async def __call__(self, ticket: Ticket) -> Outcome | None:
        if not ticket.durable:
            return None
        marker = ticket.event.marker
        if not ticket.recovered and not await self.take(marker):
            return Outcome.DUPLICATE
        self.answering.add(marker)
        return None


# -- answer -------------------------------------------------------------------------------------


@dataclass
class HandedOff:
    """A conversation a person has: the bot stays quiet (and keeps the transcript) until
    staff say "resume" (or "resolved")."""

    handoffs: Handoffs

    async def __call__(self, ticket: Ticket) -> Outcome | None:
        if not await self.handoffs.active(ticket.event.key):
            return None
        resume = COMMANDS.get(ticket.text.lower()) == "resume"
        resumed = await self.handoffs.while_handed_off(
            ticket.event, ticket.text, ticket.answer_to, resume
        )
        return Outcome.COMMAND if resumed else Outcome.HANDED_OFF


@dataclass
class RateLimit:
    """Per user and per channel (token buckets; shared by replicas with Redis): one polite
    notice per window, then silence."""

    limiter: RateLimiter

    async def __call__(self, ticket: Ticket) -> Outcome | None:
        event = ticket.event
        scope = (event.platform, event.workspace)
        verdict, wait = await self.limiter.admit((*scope, event.user), (*scope, event.channel))
        if verdict is Limit.OK:
            return None
        if verdict is Limit.NOTIFY:
            await ticket.answer_to.finish(SLOW_DOWN.format(seconds=max(1, round(wait))))
        return Outcome.RATE_LIMITED


async def usable_input(ticket: Ticket) -> Outcome | None:
    """Nothing left once mentions, markup and whitespace are gone, and no file to read: a
    hint (after why an attached file was not read), not the model."""
    files = ticket.event.files
    if ticket.text or any(file.text for file in files):
        return None
    notices = dict.fromkeys(file.notice for file in files if file.notice)
    await ticket.answer_to.finish("\n".join([*notices, EMPTY_HINT]))
    return Outcome.HINTED


@dataclass
class Command:
    """ "human" (or a handoff phrase, or "yes" right after a don't-know's offer), "reset",
    "help"."""

    handoffs: Handoffs
    reset: Callable[[ConversationKey], Awaitable[None]]
    help_text: Callable[[], str]

    async def __call__(self, ticket: Ticket) -> Outcome | None:
        event, text, reply = ticket.event, ticket.text, ticket.answer_to
        command = COMMANDS.get(text.lower())
        reason = ""
        if command == "human" or self.handoffs.asks_for_a_person(text):
            reason = "asked for a human"
        elif accepts(text) and await self.handoffs.offered_a_person(event.key):
            reason = "accepted the offer of a person"
        if reason:
            await self.handoffs.record_quietly(event, text)
            await self.handoffs.hand_off(event.key, reply, reason)
            return Outcome.HANDED_OFF
        if command == "reset":
            await self.reset(event.key)
            await reply.finish(RESET_DONE)
            return Outcome.COMMAND
        if command == "help":
            await reply.finish(self.help_text())
            return Outcome.COMMAND
        return None


@dataclass
class Quota:
    """At most the policy's ``quota`` questions a user a day (admins exempt); told once."""

    store: Store
    clock: Callable[[], datetime]
    _told: set[tuple[str, str, str, date]] = field(default_factory=set)

    async def __call__(self, ticket: Ticket) -> Outcome | None:
        decision, event = ticket.decision, ticket.event
        assert decision is not None
        quota = decision.settings.quota
        if decision.admin or quota <= 0:
            return None
        today = self.clock().replace(hour=0, minute=0, second=0, microsecond=0)
        try:
            asked = await self.store.count_questions(
                event.platform, event.workspace, event.user, today
            )
        except StoreError:
            return None  # the store's own failure is reported when the message is recorded
        if asked < quota:
            return None
        marker = (event.platform, event.workspace, event.user, today.date())
        if marker not in self._told:
            # Yesterday's notices are spent: keep the set from growing day after day.
            self._told = {m for m in self._told if m[3] == today.date()}
            self._told.add(marker)
            await ticket.answer_to.finish(QUOTA.format(quota=quota))
        return Outcome.QUOTA


@dataclass
class MessageCap:
    """The bot's own cap on messages per channel and minute (``bot_messages_per_channel_minute``):
    past it, silence."""

    limiter: RateLimiter

    async def __call__(self, ticket: Ticket) -> Outcome | None:
        event = ticket.event
        if await self.limiter.may_post((event.platform, event.workspace, event.channel)):
            return None
        log.warning("not answering in %s: the bot's per-minute message cap is reached", event.key)
        return Outcome.RATE_LIMITED
