"""The core's front door. ``Service.admit`` walks an event down the admission stretch of the
gate (bot/core/gate.py: addressed, permitted, taken in, duplicate, bot loop, lease) and
``Service.answer`` down the answer stretch (handed off, rate limit, clean input, command, quota,
message cap), then hands it to the conversation manager; ``handle`` does both. Events of a
platform that resumes answers (``resumable``) stay in the store's inbox until answered, and are
answered after a restart (``recover``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bot.config import Config, load_config
from bot.core.answer import Answer
from bot.core.conversation import ConversationManager
from bot.core.gate import (
    Addressed,
    BotLoop,
    Command,
    Duplicate,
    Gate,
    HandedOff,
    Lease,
    MessageCap,
    Outcome,
    Permitted,
    Quota,
    RateLimit,
    TakenIn,
    Ticket,
    usable_input,
)
from bot.core.handoff import Handoffs
from bot.core.learning import Learning, LinkTo, PostSnippet, SnippetAction
from bot.core.metrics import Metrics
from bot.core.policy import Decision, Policy
from bot.core.ratelimit import RateLimiter
from bot.core.recovery import Recovery, Resume, lease_key
from bot.core.reply import Reply, Tracked, Unseen, reply_id
from bot.core.review import Action, Decided, PostForReview, Reviews
from bot.core.text import cut
from bot.core.wording import BUSY, HELP, NOT_HANDED_OFF, TOO_LONG
from bot.errors import Busy, ConfigError, StoreError
from bot.events import ConversationKey, Event, Rating
from bot.generation.base import Backend
from bot.storage.base import Draft, Snippet, Store, Turn

if TYPE_CHECKING:
    from bot.knowledge.base import KnowledgeBase

__all__ = ["Admission", "Outcome", "Resume", "Service"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Admission:
    """What :meth:`Service.admit` made of an event: an ``outcome`` when it stops there, else
    the policy's ``decision``, and whether it is ``durable`` (taken into the inbox)."""

    outcome: Outcome | None
    decision: Decision | None = None
    durable: bool = False


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
        self.handoffs = Handoffs(config.handoff, store, self.metrics, lambda: self.clock())
        self.conversations = ConversationManager(
            store,
            backend,
            config.bot,
            config.model,
            self.metrics,
            knowledge,
            # Repeated don't-knows hand the customer to a person instead of a third shrug.
            hand_off=self.handoffs.hand_off,
            dont_knows_before_handoff=config.handoff.dont_knows_in_a_row,
            file_tokens=config.attachments.max_tokens,
        )
        self.metrics.watch(lambda: self.conversations.pending, lambda: backend.in_flight)
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
        self.policy = Policy(config.policy)
        #: The time quotas are counted by (replaceable in tests).
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._started = False
        #: Platforms whose events are durable, and how each resumes one (resumable()).
        self.resumers: dict[str, Resume] = {}
        self.reviews = Reviews(config.review, store, self.handoffs, self.metrics, self.resumers)
        self.learning = Learning(store, self.handoffs, knowledge)
        #: Durable events being answered by this process (recover() leaves them be).
        self._answering: set[str] = set()
        #: How long the lease of an answer in progress lasts unless renewed.
        self.lease_seconds = config.store.lock_ttl
        self.recovery = Recovery(
            config.limits,
            store,
            self.resumers,
            self._answering,
            self.lease_seconds,
            self._recovered,
            self._inbox,
        )
        self.admission = Gate(
            [
                (
                    "addressed",
                    Addressed(
                        lambda event, in_thread: self.policy.decide(event, bot_in_thread=in_thread),
                        store,
                        limits.allow_bots,
                        config.bot.history_turns,
                    ),
                ),
                ("permitted", Permitted(self.metrics)),
                ("taken in", TakenIn(store, self.resumers.__contains__, self._inbox)),
                ("duplicate", Duplicate(store)),
                ("bot loop", BotLoop(limits.bot_turns_in_a_row, store, self._inbox)),
                ("lease", Lease(self._take_lease, self._answering)),
            ]
        )
        self.gate = Gate(
            [
                ("handed off", HandedOff(self.handoffs)),
                ("rate limit", RateLimit(self.limiter)),
                ("clean input", usable_input),
                (
                    "command",
                    Command(self.handoffs, self.conversations.reset, lambda: self.help_text),
                ),
                ("quota", Quota(store, lambda: self.clock())),
                ("message cap", MessageCap(self.limiter)),
            ]
        )

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
        await self.learning.sync()
        self.learning.start()

    async def close(self, grace: float = 10.0) -> None:
        """Stop taking messages, let replies in flight finish within ``grace`` seconds, close."""
        await self.learning.close()
        await self.conversations.close(grace)
        # Answers cut short stay in the inbox; their leases go, so the restart takes them at
        # once rather than when the leases lapse.
        for marker in list(self._answering):
            await self._inbox(self.store.release(lease_key(marker)))
        await self.backend.close()
        await self.store.close()

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def ready(self) -> bool:
        """Whether the model can take requests now."""
        return self.backend.ready

    async def history(self, key: ConversationKey) -> list[Turn]:
        """The conversation at ``key`` since its last reset, oldest first (the web chat shows
        it again after a reload). Raises StoreError when the store cannot be read."""
        return await self.store.history(key)

    def cancel(self, key: ConversationKey) -> bool:
        """Stop answering in ``key``: its reader went away (a closed web page). The answer
        being written keeps what it had, as partial; messages queued there are dropped."""
        return self.conversations.cancel(key)

    @property
    def help_text(self) -> str:
        return HELP.format(name=self.config.bot.name, company=self.config.bot.company)

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
        ticket = Ticket(event, recovered, admission.decision, admission.durable, reply)
        if admission.outcome is not None:
            outcome, answer = admission.outcome, None
        elif not admission.durable:
            outcome, answer = await self._respond(ticket)
        else:
            if isinstance(reply, Tracked):
                reply.on_posted = lambda: self._inbox(
                    self.store.inbox_mark(event.marker, "answering", reply_id(reply))
                )
            holding = asyncio.create_task(self._hold(event.marker))
            try:
                outcome, answer = await self._respond(ticket)
            finally:
                holding.cancel()
            # (Cut short, it stays among those answering: close() lets its lease go.)
            self._answering.discard(event.marker)
            await self._inbox(self.store.inbox_mark(event.marker, "answered", reply_id(reply)))
        self.metrics.events.labels(event.platform, outcome.value).inc()
        busy = outcome is Outcome.BUSY or (answer is not None and answer.outcome == "busy")
        if busy or outcome is Outcome.RATE_LIMITED:
            # No answer of theirs reaches a transcript: counted, for the console's overview.
            try:
                await self.store.count_outcome(event.platform, "busy" if busy else "rate_limited")
            except StoreError:
                log.exception("cannot count a %s event", outcome.value)
        return outcome, answer

    async def _recovered(self, event: Event, reply: Reply) -> None:
        await self.answer(event, reply, recovered=True)

    async def admit(self, event: Event, recovered: bool = False) -> Admission:
        """Whether ``event`` is answered at all (the admission stretch of the gate); one that
        is, on a durable platform, is taken into the inbox first, so that a crash before its
        answer is finished leaves it there for the restart to answer (:meth:`recover`)."""
        ticket = Ticket(event, recovered)
        outcome = await self.admission.walk(ticket)
        return Admission(outcome, ticket.decision, ticket.durable and outcome is None)

    async def _respond(self, ticket: Ticket) -> tuple[Outcome, Answer | None]:
        outcome = await self.gate.walk(ticket)
        if outcome is not None:
            return outcome, None
        assert ticket.decision is not None and ticket.reply is not None
        limit = self.config.bot.max_message_chars
        text, was_cut = cut(ticket.text, limit)
        notes = [TOO_LONG.format(limit=limit)] if was_cut else []
        settings = ticket.decision.settings
        mode = settings.autonomy
        if mode == "draft" and not self.reviews.can_review(ticket.event.platform):
            # Nowhere to show staff a draft: keep it to read rather than answer unchecked.
            log.warning(
                "no staff review channel on %s: drafts kept as shadow answers",
                ticket.event.platform,
            )
            mode = "shadow"
        # A draft or a shadow answer is written for the team: the customer is shown nothing.
        reply = Unseen() if mode != "auto" else ticket.reply
        try:
            done = self.conversations.submit(
                ticket.event, text, reply, notes, settings, record=mode == "auto"
            )
        except Busy:
            await ticket.reply.fail(BUSY)
            return Outcome.BUSY, None
        answer = await asyncio.shield(done)
        if not isinstance(reply, Unseen):
            await self.learning.count_cited(answer.sources)
            return Outcome.ANSWERED, answer
        if mode == "draft":
            await self.reviews.propose(ticket.event, text, reply, answer, ticket.reply)
            return Outcome.DRAFTED, answer
        await self.reviews.keep(ticket.event, text, reply, answer)
        return Outcome.SHADOWED, answer

    async def _take_lease(self, marker: str) -> bool:
        try:
            return await self.store.claim(lease_key(marker), self.lease_seconds)
        except StoreError:
            log.exception("cannot take the lease of %s", marker)
            return True  # answer it; only its recovery after a crash is at risk

    async def _hold(self, marker: str) -> None:
        """Renew the lease of an answer in progress until it ends: a process that dies lets
        it lapse within ``store.lock_ttl``, and the others' recovery takes the entry then."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            await self._inbox(self.store.extend(lease_key(marker), self.lease_seconds))

    def reload_policy(self, path: str | None = None) -> str | None:
        """Re-read the policy from the config file; on an error keep the old one and say why."""
        try:
            config = load_config(
                path if path is not None else self.config.source_path, self.config.platforms
            )
        except ConfigError as exc:
            log.error("policy not reloaded, the old one stays: %s", exc)
            return str(exc)
        self.policy = Policy(config.policy)
        log.info("policy reloaded from %s", config.source)
        return None

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
        left by a process that died while answering it is taken once its lease lapses. Drafts
        staff left too long are handed off on the same beat."""
        while True:
            try:
                await self.recover(platform)
            except Exception:
                log.exception("recovering the questions left unanswered failed")
            try:
                await self.reviews.expire(platform)
            except Exception:
                log.exception("handing off the drafts nobody decided on failed")
            await asyncio.sleep(self.lease_seconds)

    def reviewing(self, platform: str, post: PostForReview) -> None:
        """``platform`` shows drafts to staff: ``post(draft)`` puts one in its review channel."""
        self.reviews.reviewing(platform, post)

    async def decide(
        self,
        draft_id: str,
        action: Action,
        user: str,
        roles: Iterable[str] = (),
        text: str = "",
        name: str = "",
    ) -> Decided:
        """A staff member's decision on a draft (``bot.core.review``)."""
        return await self.reviews.decide(draft_id, action, user, roles, text, name)

    async def draft(self, draft_id: str) -> Draft | None:
        return await self.store.draft(draft_id)

    async def resolve(
        self, key: ConversationKey, user: str, roles: Iterable[str], reply: Reply
    ) -> bool:
        """Staff mark a handed-off conversation done: the bot answers there again, and what
        the staff answered there is proposed for the knowledge base (bot/core/learning.py)."""
        resolved = await self.handoffs.resolve(key, user, roles, reply)
        if resolved:
            await self.learning.propose(key)
        return resolved

    def learns_on(self, platform: str, link: LinkTo, post: PostSnippet | None = None) -> None:
        """``platform`` links back to its conversations and, with ``post``, shows proposed
        snippets to staff (its review channel, with buttons)."""
        self.learning.links[platform] = link
        if post is not None:
            self.learning.posting[platform] = post

    async def decide_snippet(
        self,
        snippet_id: str,
        action: SnippetAction,
        user: str,
        roles: Iterable[str] = (),
        text: str = "",
        name: str = "",
    ) -> tuple[bool, str]:
        """A staff member approves, edits or rejects a proposed snippet."""
        return await self.learning.decide(snippet_id, action, user, roles, text, name)

    async def snippet(self, snippet_id: str) -> Snippet | None:
        return await self.store.snippet(snippet_id)

    async def claim(
        self, conversation: str, user: str, roles: Iterable[str] = (), name: str = ""
    ) -> tuple[bool, str]:
        """A staff member takes a handed-off conversation (its key, as the handoff gave it):
        (True, the line the customer sees) or (False, why not)."""
        try:
            key = ConversationKey.parse(conversation)
        except ValueError:
            return False, NOT_HANDED_OFF
        return await self.handoffs.claim(key, user, roles, name)

    def is_staff(self, user: str, roles: Iterable[str] = ()) -> bool:
        return self.handoffs.is_staff_member(user, roles)

    async def recover(self, platform: str) -> int:
        """Answer ``platform``'s events left unanswered when the service last stopped
        (``bot.core.recovery``); returns how many were answered or apologised to."""
        return await self.recovery.recover(platform)

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
