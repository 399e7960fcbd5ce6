"""Staff in the loop: answers the team reads before (or instead of) the customer.

Policy ``autonomy`` says how far the bot acts on its own in a conversation. In ``shadow`` the
answer is kept for ``parley report`` and nothing is shown. In ``draft`` it goes to the
platform's staff review channel (the adapter posts it, with its buttons) and the customer sees
``review.note``; staff approve it (posted as written), edit it (posted as they changed it) or
reject it (the conversation is handed to a person), and a draft nobody decides on within
``review.expire_minutes`` is handed off too. Drafts live in the store, so a decision made
after a restart, or on another replica, is answered from it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from bot.config import ReviewConfig
from bot.core.answer import Answer
from bot.core.handoff import Handoffs
from bot.core.metrics import Metrics
from bot.core.recovery import Resume
from bot.core.reply import Reply, Unseen, reply_id
from bot.core.wording import (
    ALREADY_DECIDED,
    DECIDED,
    DRAFT_GONE,
    EMPTY_EDIT,
    NOT_STAFF,
    STORE_DOWN,
)
from bot.errors import StoreError
from bot.events import Event
from bot.storage.base import Draft, DraftState, Store

__all__ = ["Action", "Decided", "Draft", "PostForReview", "Reviews"]

log = logging.getLogger(__name__)

#: The adapter's way of showing a pending draft to staff, with its buttons.
PostForReview = Callable[[Draft], Awaitable[None]]
Action = Literal["approve", "edit", "reject"]
_STATE: dict[Action, DraftState] = {"approve": "approved", "edit": "edited", "reject": "rejected"}


@dataclass(frozen=True)
class Decided:
    """What a staff member's click did: ``message`` is the one line to show them."""

    ok: bool
    message: str
    draft: Draft | None = None


class Reviews:
    def __init__(
        self,
        config: ReviewConfig,
        store: Store,
        handoffs: Handoffs,
        metrics: Metrics,
        resumers: Mapping[str, Resume],
    ) -> None:
        self.config = config
        self.store = store
        self.handoffs = handoffs
        self.metrics = metrics
        self.resumers = resumers
        self.reviewers: dict[str, PostForReview] = {}

    def reviewing(self, platform: str, post: PostForReview) -> None:
        """``platform`` has a staff review channel: ``post(draft)`` shows a draft there."""
        self.reviewers[platform] = post

    def can_review(self, platform: str) -> bool:
        return platform in self.reviewers and platform in self.resumers

    async def keep(self, event: Event, question: str, written: Unseen, answer: Answer) -> None:
        """Keep a shadow answer for ``parley report``; nobody was shown anything."""
        if answer.outcome in ("failed", "busy"):
            return
        await self._add(Draft(_new_id(), str(event.key), question, written.text, "shadow", _now()))

    async def propose(
        self, event: Event, question: str, written: Unseen, answer: Answer, reply: Reply
    ) -> None:
        """Send ``written`` to staff for review and tell the customer it is coming."""
        if answer.outcome in ("failed", "busy"):
            await reply.fail(written.text)
            return
        draft = Draft(_new_id(), str(event.key), question, written.text, "pending", _now(), event)
        if not await self._add(draft):
            await reply.fail(STORE_DOWN)
            return
        try:
            await self.reviewers[event.platform](draft)
        except Exception:
            # Kept pending: if staff never see it, it expires into a handoff.
            log.exception("cannot post draft %s for review", draft.id)
        if self.config.note:
            await reply.finish(self.config.note)

    async def decide(
        self,
        draft_id: str,
        action: Action,
        user: str,
        roles: Iterable[str] = (),
        text: str = "",
        name: str = "",
    ) -> Decided:
        """Staff member ``user`` (shown as ``name``) approves, edits (``text``) or rejects a
        pending draft."""
        if not self.handoffs.is_staff_member(user, roles):
            return Decided(False, NOT_STAFF)
        if action == "edit" and not text.strip():
            return Decided(False, EMPTY_EDIT)
        draft = await self.store.draft(draft_id)
        if draft is None or draft.event is None:
            return Decided(False, DRAFT_GONE)
        state = _STATE[action]
        posted = text.strip() if action == "edit" else draft.answer if action == "approve" else ""
        by = name or user
        if not await self.store.decide_draft(draft_id, state, by, posted):
            now = await self.store.draft(draft_id) or draft
            return Decided(False, ALREADY_DECIDED.format(state=now.state, who=now.decided_by))
        await self._settle(draft, state, posted)
        return Decided(True, DECIDED[state].format(who=by), await self.store.draft(draft_id))

    async def expire(self, platform: str) -> int:
        """Hand to a person every pending draft of ``platform`` older than the limit."""
        cutoff = _now() - timedelta(minutes=self.config.expire_minutes)
        expired = 0
        for draft in await self.store.pending_drafts():
            event = draft.event
            if event is None or event.platform != platform:
                continue
            if draft.created_at <= cutoff and await self.store.decide_draft(
                draft.id, "expired", "parley"
            ):
                await self._settle(draft, "expired", "")
                expired += 1
        return expired

    async def _settle(self, draft: Draft, state: DraftState, posted: str) -> None:
        """Do what was decided: post the answer where the customer asked, or hand off."""
        assert draft.event is not None
        event = draft.event
        self.metrics.drafts.labels(state).inc()
        self.metrics.draft_decision.observe((_now() - draft.created_at).total_seconds())
        reply = await self.resumers[event.platform](event, "")
        if state in ("rejected", "expired"):
            await self.handoffs.hand_off(event.key, reply, f"a draft answer was {state}")
            return
        await reply.finish(posted)
        try:
            await self.store.append(event.key, "assistant", posted, message_id=reply_id(reply))
        except StoreError:
            log.exception("cannot record an approved answer in %s", event.key)

    async def _add(self, draft: Draft) -> bool:
        try:
            await self.store.add_draft(draft)
        except StoreError:
            log.exception("cannot keep a draft answer in %s", draft.conversation)
            self.metrics.errors.labels("store").inc()
            return False
        self.metrics.drafts.labels(draft.state).inc()
        return True


def _new_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)
