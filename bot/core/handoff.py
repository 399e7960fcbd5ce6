"""Handing a conversation to a person: asked for, accepted after a don't-know, or after
don't-knows in a row. While a conversation is handed off the bot stays quiet there (for
``handoff.quiet_minutes``, or until a staff member says "resume") and keeps the transcript."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from bot.config import HandoffConfig
from bot.core.hours import next_opening
from bot.core.metrics import Metrics
from bot.core.reply import HandsOff, Reply
from bot.core.wording import (
    ALREADY_CLAIMED,
    CLAIMED,
    HANDOFF,
    NOT_HANDED_OFF,
    NOT_STAFF_CLAIM,
    OUTSIDE_HOURS,
    RESUMED,
    STORE_DOWN,
)
from bot.errors import StoreError
from bot.events import ConversationKey, Event
from bot.storage.base import Store

__all__ = ["Handoffs"]

log = logging.getLogger(__name__)


class Handoffs:
    def __init__(
        self,
        config: HandoffConfig,
        store: Store,
        metrics: Metrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.clock = clock

    def asks_for_a_person(self, text: str) -> bool:
        lowered = " ".join(text.lower().split())
        return any(phrase.lower() in lowered for phrase in self.config.phrases)

    async def offered_a_person(self, key: ConversationKey) -> bool:
        """Whether the bot's last answer here was a don't-know, which offers a person."""
        try:
            turns = await self.store.history(key, limit=2)
        except StoreError:
            return False
        said = [turn for turn in turns if turn.role == "assistant"]
        return bool(said) and said[-1].status == "dont_know"

    def is_staff(self, event: Event) -> bool:
        return self.is_staff_member(event.user, event.roles)

    def is_staff_member(self, user: str, roles: Iterable[str] = ()) -> bool:
        return user in self.config.staff_users or any(r in self.config.staff_roles for r in roles)

    async def active(self, key: ConversationKey) -> bool:
        """Whether ``key`` is with a person now; a handoff quiet for too long ends here."""
        try:
            since = await self.store.handoff_since(key)
            if since is None:
                return False
            if datetime.now(UTC) - since < timedelta(minutes=self.config.quiet_minutes):
                return True
            await self.store.end_handoff(key)
        except StoreError:
            log.exception("cannot read the handoff state of %s", key)
        return False

    async def hand_off(
        self, key: ConversationKey, reply: Reply, reason: str, lead: str = ""
    ) -> None:
        """Ask the staff to take over here and keep the bot quiet until they hand it back.

        A reply that can ``handoff(text)`` posts the text with the one mention the bot may
        make, its support team's; any other shows the text alone. ``lead`` comes first (the
        don't-know answer that led here)."""
        log.info("handing %s to a human: %s", key, reason)
        try:
            await self.store.start_handoff(key, reason)
        except StoreError:
            log.exception("cannot record the handoff of %s", key)
            self.metrics.errors.labels("store").inc()
            await reply.fail(STORE_DOWN)
            return
        text = f"{lead}\n\n{HANDOFF}" if lead else HANDOFF
        opening = next_opening(self.config, self.clock())
        if opening is not None:
            when = f"{opening:%A %H:%M} ({self.config.timezone})"
            text = f"{text} {OUTSIDE_HOURS.format(when=when)}"
        if isinstance(reply, HandsOff):
            await reply.handoff(text, str(key))
        else:
            await reply.finish(text)

    async def claim(
        self, key: ConversationKey, user: str, roles: Iterable[str], name: str = ""
    ) -> tuple[bool, str]:
        """Staff member ``user`` takes the handed-off conversation ``key``: (True, the line
        the customer sees) the first time, else (False, why not, for the clicker alone)."""
        if not self.is_staff_member(user, roles):
            return False, NOT_STAFF_CLAIM
        who = name or user
        try:
            taken, holder = await self.store.claim_handoff(key, who)
        except StoreError:
            log.exception("cannot record who took %s", key)
            return False, STORE_DOWN
        if taken:
            self.metrics.claims.inc()
            return True, CLAIMED.format(who=who)
        return False, ALREADY_CLAIMED.format(who=holder) if holder else NOT_HANDED_OFF

    async def while_handed_off(self, event: Event, text: str, reply: Reply, resume: bool) -> bool:
        """A message in a conversation a person has: ``resume`` from staff gives it back to
        the bot (True); anything else is kept in the transcript, unanswered."""
        if self.is_staff(event) and resume:
            await self.store.end_handoff(event.key)
            await reply.finish(RESUMED)
            return True
        # Quiet, but the transcript stays whole for when the bot takes over again.
        if text:
            author = f"[staff {event.user_name or event.user}] " if self.is_staff(event) else ""
            await self.record_quietly(event, author + text)
        return False

    async def resolve(
        self, key: ConversationKey, user: str, roles: Iterable[str], reply: Reply
    ) -> bool:
        """Staff mark the conversation ``key`` done (a ✅): the bot is back and says so there.
        False, and nothing shown, for anyone else or a conversation nobody was handed."""
        if not self.is_staff_member(user, roles) or not await self.active(key):
            return False
        try:
            await self.store.end_handoff(key)
        except StoreError:
            log.exception("cannot end the handoff of %s", key)
            return False
        await reply.finish(RESUMED)
        return True

    async def record_quietly(self, event: Event, text: str) -> None:
        """Keep a message the bot does not answer in the transcript, if the store allows."""
        try:
            await self.store.append(
                event.key, "user", text, user=event.user, message_id=event.message_id
            )
        except StoreError:
            log.exception("cannot record a message in %s", event.key)
