"""What the service needs from storage, whichever keeps it: conversation history, de-dup
markers and leases, handoffs, feedback, the durable inbox, shared rate limits."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from bot.events import ConversationKey, Event, Rating

__all__ = [
    "INBOX_KEEP",
    "Claim",
    "Draft",
    "DraftState",
    "InboxState",
    "Rated",
    "Rating",
    "Recorded",
    "Role",
    "Snippet",
    "SnippetState",
    "Status",
    "Store",
    "Transcript",
    "Turn",
    "Waiting",
]

Role = Literal["user", "assistant"]
# "dont_know": the bot found nothing to answer from and said so.
Status = Literal["complete", "partial", "failed", "dont_know"]
#: An inbox entry's progress: taken in, being answered, answered (or given up on).
InboxState = Literal["received", "answering", "answered"]
#: What became of an answer written for the team rather than posted: "shadow", kept to read;
#: "pending" staff review, then "approved" (posted as written), "edited" (posted as staff
#: changed it), "rejected" (handed to a person) or "expired" (nobody decided in time).
DraftState = Literal["shadow", "pending", "approved", "edited", "rejected", "expired"]
#: A knowledge snippet proposed from a resolved conversation: "pending" staff review, then
#: "approved" (learned as written), "edited" (learned as staff changed it) or "rejected".
SnippetState = Literal["pending", "approved", "edited", "rejected"]
#: Answered inbox entries are kept this long (seconds), then dropped.
INBOX_KEEP = 86400.0


@dataclass(frozen=True, slots=True)
class Turn:
    role: Role
    content: str
    created_at: datetime
    status: Status = "complete"


@dataclass(frozen=True, slots=True)
class Timing:
    """How long an answer took: seconds to its first text shown, and to the whole answer."""

    first_text_s: float
    answer_s: float


@dataclass(frozen=True, slots=True)
class Recorded:
    """A stored turn as a report or a training export reads it; a ``reset`` marks where the
    conversation started afresh."""

    role: Literal["user", "assistant", "reset"]
    content: str
    created_at: datetime
    status: Status = "complete"
    #: The platform's id of the posted answer, which ratings refer to.
    message_id: str = ""
    #: An answer's seconds from the question taken to its first text shown, and to the whole
    #: answer (None for questions, and answers stored before timings were).
    timing: Timing | None = None


@dataclass(frozen=True, slots=True)
class Transcript:
    """One conversation's every turn, oldest first; ``conversation`` names it."""

    conversation: str
    turns: tuple[Recorded, ...]


@dataclass(frozen=True, slots=True)
class Rated:
    """One person's rating of one answer, with the question it answered."""

    conversation: str
    reply_id: str
    rating: Rating
    question: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Claim:
    """A staff member taking a handed-off conversation: who, and how long after the handoff."""

    conversation: str
    started_at: datetime
    claimed_by: str
    claimed_at: datetime


@dataclass(frozen=True, slots=True)
class Draft:
    """An answer the bot wrote for its team instead of posting it (policy ``autonomy``)."""

    id: str
    conversation: str
    question: str
    answer: str
    state: DraftState
    created_at: datetime
    #: The customer's message, to answer in its place once approved (pending drafts).
    event: Event | None = None
    decided_by: str = ""
    decided_at: datetime | None = None
    #: What was posted: the answer, or staff's edit of it.
    posted: str = ""


@dataclass(frozen=True, slots=True)
class Snippet:
    """What staff answered in a resolved conversation, proposed for the knowledge base: the
    customer's question and the staff answer, cleaned and masked (bot/core/learning.py)."""

    id: str
    conversation: str
    question: str
    answer: str
    state: SnippetState
    created_at: datetime
    #: Back to the conversation on its platform ('' where it has no address).
    link: str = ""
    #: What a reviewer should check first: an article that says otherwise.
    note: str = ""
    decided_by: str = ""
    decided_at: datetime | None = None
    #: Answers that cited it once learned.
    cited: int = 0

    @property
    def learned(self) -> bool:
        return self.state in ("approved", "edited")


@dataclass(frozen=True, slots=True)
class Waiting:
    """An event taken in and not answered yet: the service stopped before it was."""

    event: Event
    state: InboxState
    reply_id: str  # the message posted for its answer so far; '' when none
    received_at: datetime


class Store(ABC):
    """What the conversation manager needs from storage; SQLite here, Redis for scale-out."""

    #: Whether :meth:`take_token` keeps rate limits here, shared by the replicas using it.
    shares_limits = False

    async def take_token(
        self, bucket: str, per_second: float, burst: float
    ) -> tuple[bool, float, bool]:
        """A token bucket kept in the store (``bot.core.ratelimit.SharedBuckets``)."""
        raise NotImplementedError("this store keeps no rate limits")

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def append(
        self,
        key: ConversationKey,
        role: Role,
        content: str,
        *,
        status: Status = "complete",
        user: str = "",
        message_id: str = "",
        timing: Timing | None = None,
    ) -> None: ...

    @abstractmethod
    async def history(self, key: ConversationKey, limit: int = 100) -> list[Turn]:
        """The newest ``limit`` turns since the last reset, oldest first."""

    @abstractmethod
    async def reset(self, key: ConversationKey) -> None:
        """Start the conversation afresh; earlier turns stay stored but leave the context."""

    @abstractmethod
    async def check(self) -> None:
        """Raise StoreError unless the store can be written right now."""

    @abstractmethod
    async def claim(self, marker: str, ttl: float) -> bool:
        """True the first time ``marker`` is claimed within ``ttl`` seconds, False after."""

    @abstractmethod
    async def extend(self, marker: str, ttl: float) -> None:
        """Keep a claim ``ttl`` seconds longer from now."""

    @abstractmethod
    async def release(self, marker: str) -> None:
        """Drop a claim: ``marker`` may be claimed again at once."""

    @abstractmethod
    async def count_questions(
        self, platform: str, workspace: str, user: str, since: datetime
    ) -> int:
        """Messages from ``user`` on that platform and workspace taken up since ``since``."""

    @abstractmethod
    async def start_handoff(self, key: ConversationKey, reason: str) -> None:
        """Mark the conversation as handed to a human (the bot stays quiet there)."""

    @abstractmethod
    async def handoff_since(self, key: ConversationKey) -> datetime | None:
        """When the open handoff in this conversation began; None when there is none."""

    @abstractmethod
    async def end_handoff(self, key: ConversationKey) -> None: ...

    @abstractmethod
    async def claim_handoff(self, key: ConversationKey, by: str) -> tuple[bool, str]:
        """Staff member ``by`` takes the open handoff in ``key``: (True, by) the first time,
        else (False, who has it; '' when no handoff is open there)."""

    @abstractmethod
    async def add_feedback(
        self, scope: ConversationKey, reply_id: str, user: str, rating: Rating
    ) -> bool:
        """Rate the bot answer posted as ``reply_id`` somewhere in ``scope``'s channel (its
        thread is ignored: reactions do not say it). False when no such answer is known."""

    @abstractmethod
    async def inbox_add(self, event: Event) -> None:
        """Take ``event`` (one with a ``marker``) into the inbox, unless it is there already."""

    @abstractmethod
    async def inbox_mark(self, marker: str, state: InboxState, reply_id: str = "") -> None:
        """Record an entry's progress (and, when given, the message its answer is in)."""

    @abstractmethod
    async def inbox_state(self, marker: str) -> InboxState | None:
        """An entry's state now; None when the inbox has no such entry."""

    @abstractmethod
    async def inbox_waiting(self, limit: int = 1000) -> list[Waiting]:
        """Entries not answered yet, oldest first."""

    @abstractmethod
    async def inbox_count(self) -> tuple[int, datetime | None]:
        """How many entries wait to be answered, and when the oldest was received."""

    @abstractmethod
    async def count_outcome(self, platform: str, outcome: str) -> None:
        """Count, for today (UTC), one event that leaves no answer in a transcript: a customer
        told the bot is busy, or to slow down."""

    @abstractmethod
    async def outcome_counts(self, since: date) -> list[tuple[date, str, str, int]]:
        """(day, platform, outcome, count) of what ``count_outcome`` counted from ``since``."""

    # -- what `parley report` and `parley export-training` read -----------------------------
    @abstractmethod
    async def transcripts(self) -> list[Transcript]:
        """Every conversation stored, with all its turns and reset markers."""

    @abstractmethod
    async def ratings(self) -> list[Rated]:
        """Every rating given, the latest of each person for each answer."""

    @abstractmethod
    async def handoffs_started(self) -> list[datetime]:
        """When each handoff to a person began."""

    @abstractmethod
    async def claims(self) -> list[Claim]:
        """Every handoff a staff member claimed."""

    # -- answers written for the team ------------------------------------------------------
    @abstractmethod
    async def add_draft(self, draft: Draft) -> None: ...

    @abstractmethod
    async def drafts(self) -> list[Draft]:
        """Every draft kept, oldest first."""

    @abstractmethod
    async def pending_drafts(self) -> list[Draft]:
        """The drafts waiting for staff, oldest first (without reading every shadow answer)."""

    @abstractmethod
    async def draft(self, draft_id: str) -> Draft | None: ...

    @abstractmethod
    async def decide_draft(
        self, draft_id: str, state: DraftState, by: str, posted: str = ""
    ) -> bool:
        """Settle a pending draft; False when it is not pending (someone decided first)."""

    # -- what staff teach the knowledge base -------------------------------------------------
    @abstractmethod
    async def add_snippet(self, snippet: Snippet) -> None: ...

    @abstractmethod
    async def snippets(self) -> list[Snippet]:
        """Every snippet proposed, oldest first."""

    @abstractmethod
    async def snippet(self, snippet_id: str) -> Snippet | None: ...

    @abstractmethod
    async def decide_snippet(
        self, snippet_id: str, state: SnippetState, by: str, answer: str
    ) -> bool:
        """Settle a pending snippet (``answer``: as learned); False when it is not pending."""

    @abstractmethod
    async def cite_snippet(self, snippet_id: str) -> None:
        """Count one answer citing the learned snippet."""

    def conversation_lock(
        self, key: ConversationKey
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while one message in ``key`` is answered, so that replicas sharing a store
        answer a conversation one message at a time. Entering may raise StoreError.

        Nothing to do by default: one process already orders its own conversations."""
        return contextlib.nullcontext()
