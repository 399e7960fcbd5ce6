"""Resolved conversations that teach the knowledge base, a person deciding what it learns.

When staff resolve a handed-off conversation in which one of them answered, the customer's
question and the staff answer become a proposed snippet: greetings and chatter dropped,
personal data masked (e-mail addresses, phone and card numbers through :mod:`bot.redact`,
order and booking numbers, the staff's and any introduced names), with a link back to the
conversation. Staff approve, edit or reject it (the platforms' buttons, ``parley kb review``);
only approved snippets reach the knowledge base, as the ``learned`` collection, which every
replica brings in step with the store (:meth:`Learning.sync`). A snippet that gives another
figure than an article is flagged to the reviewer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from bot.core.gate import COMMANDS
from bot.core.handoff import Handoffs
from bot.core.small_talk import small_talk
from bot.core.wording import NOT_STAFF_SNIPPET, SNIPPET_DECIDED, SNIPPET_GONE
from bot.errors import StoreError
from bot.events import ConversationKey
from bot.knowledge.index import Source
from bot.knowledge.learned import PREFIX, Learned
from bot.redact import redact
from bot.storage.base import Snippet, SnippetState, Store, Turn

if TYPE_CHECKING:
    from bot.knowledge.base import KnowledgeBase

__all__ = ["Learning", "Snippet", "SnippetAction", "learned_items", "mask", "propose"]

log = logging.getLogger(__name__)

SnippetAction = Literal["approve", "edit", "reject"]
#: Where a conversation lives on its platform, for the snippet's link back to it.
LinkTo = Callable[[ConversationKey], str]
#: Shows a proposed snippet to staff on a platform (its review channel, with buttons).
PostSnippet = Callable[[Snippet], Awaitable[None]]

STATES: dict[SnippetAction, SnippetState] = {
    "approve": "approved",
    "edit": "edited",
    "reject": "rejected",
}
#: How often a replica brings its index in step with the snippets approved anywhere.
SYNC_SECONDS = 30.0

_STAFF = re.compile(r"^\[staff ([^\]\n]*)\] ?")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_CHATTER = re.compile(
    r"^(?:(?:hi|hello|hey|dear|good (?:morning|afternoon|evening))\b[^.!?]*"
    r"|thanks?(?: you)?(?: so much)?(?: for [^.!?]*)?"
    r"|(?:i )?hope (?:this|that) helps[^.!?]*"
    r"|(?:please )?let (?:me|us) know if[^.!?]*"
    r"|(?:have a|enjoy your) (?:great|good|nice|lovely) [^.!?]*"
    r"|(?:you'?re|you are) welcome[^.!?]*|no problem[^.!?]*|happy to help[^.!?]*"
    r"|sorry (?:for|about) the (?:wait|delay)[^.!?]*|(?:kind )?regards[^.!?]*|cheers[^.!?]*"
    r"|(?:i'?m|i am|this is) [A-Z][a-z]+ (?:from|of|at) [^.!?]*"
    r")[.!?]*$",
    re.IGNORECASE,
)
_ORDER = re.compile(
    r"\b((?:order|booking|ticket|invoice|case|reference|ref|account|tracking)"
    r"(?:\s+(?:number|no\.?|id|ref(?:erence)?))?\s*[:#]?\s*)(?=[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]{3,}\b",
    re.IGNORECASE,
)
_INTRODUCED = re.compile(r"\b((?i:my name is|i'm|i am|this is|call me)\s+)([A-Z][a-z]+)\b")


def mask(text: str, names: Iterable[str] = ()) -> str:
    """``text`` with its personal data masked: e-mail addresses, phone and card numbers, order
    and booking numbers, the ``names`` given and any a speaker introduces."""
    text = redact(text)
    text = _ORDER.sub(lambda m: f"{m.group(1)}[number]", text)
    text = _INTRODUCED.sub(lambda m: f"{m.group(1)}[name]", text)
    for name in names:
        for part in name.split():
            if len(part) > 1:
                text = re.sub(rf"\b{re.escape(part)}\b", "[name]", text)
    return text


def _without_chatter(text: str) -> str:
    kept = [s.strip() for s in _SENTENCE.split(text) if s.strip()]
    return " ".join(s for s in kept if not _CHATTER.match(s))


def _asks(text: str) -> bool:
    """A customer message that asks something (not "human", "yes", "thanks")."""
    lowered = text.strip().lower()
    return len(lowered.split()) >= 3 and lowered not in COMMANDS and small_talk(text) is None


def propose(
    turns: Sequence[Turn], asks_for_a_person: Callable[[str], bool] = lambda text: False
) -> tuple[str, str] | None:
    """(question, answer) a resolved conversation teaches: the customer's last question before
    the staff first answered (not a request for a person), and what the staff said, cleaned
    and masked; None when no staff member answered anything of substance."""
    first = next(
        (n for n, t in enumerate(turns) if t.role == "user" and _STAFF.match(t.content)), None
    )
    if first is None:
        return None
    staff = {m.group(1) for t in turns if (m := _STAFF.match(t.content)) and t.role == "user"}
    asked = [
        t.content
        for t in turns[:first]
        if t.role == "user"
        and not _STAFF.match(t.content)
        and _asks(t.content)
        and not asks_for_a_person(t.content)
    ]
    said = [
        _without_chatter(_STAFF.sub("", t.content))
        for t in turns[first:]
        if t.role == "user" and _STAFF.match(t.content)
    ]
    answer = mask(" ".join(s for s in said if s), staff)
    if not asked or len(answer.split()) < 3:
        return None
    return mask(asked[-1].strip(), staff), answer


def learned_items(snippets: Iterable[Snippet]) -> list[Learned]:
    """The approved snippets, as the knowledge base learns them."""
    return [Learned(s.id, s.question, s.answer, s.link) for s in snippets if s.learned]


class Learning:
    def __init__(
        self, store: Store, handoffs: Handoffs, knowledge: KnowledgeBase | None = None
    ) -> None:
        self.store = store
        self.handoffs = handoffs
        self.knowledge = knowledge
        self.links: dict[str, LinkTo] = {}
        self.posting: dict[str, PostSnippet] = {}
        self._syncing: asyncio.Task[None] | None = None
        #: The approved snippets as this replica's index last took them (None: not yet).
        self._synced: list[Learned] | None = None

    async def propose(self, key: ConversationKey) -> Snippet | None:
        """The snippet a just-resolved conversation teaches, kept for review and shown to
        staff where the platform can; None when it teaches nothing."""
        try:
            taught = propose(await self.store.history(key), self.handoffs.asks_for_a_person)
        except StoreError:
            log.exception("cannot read the resolved conversation %s", key)
            return None
        if taught is None or self.knowledge is None:
            return None
        question, answer = taught
        link = self.links[key.platform](key) if key.platform in self.links else ""
        try:
            note = await self.knowledge.contradiction(question, answer)
        except Exception:  # the check helps the reviewer; the proposal stands without it
            log.exception("cannot compare a snippet with the articles")
            note = ""
        snippet = Snippet(
            uuid.uuid4().hex[:12],
            str(key),
            question,
            answer,
            "pending",
            datetime.now(UTC),
            link,
            note,
        )
        try:
            await self.store.add_snippet(snippet)
        except StoreError:
            log.exception("cannot keep the snippet from %s", key)
            return None
        post = self.posting.get(key.platform)
        if post is not None:
            try:
                await post(snippet)
            except Exception:  # it waits in `parley kb review` all the same
                log.exception("cannot show the snippet %s to staff", snippet.id)
        return snippet

    async def decide(
        self,
        snippet_id: str,
        action: SnippetAction,
        user: str,
        roles: Iterable[str] = (),
        text: str = "",
        name: str = "",
    ) -> tuple[bool, str]:
        """A staff member's decision: (True, what the review message now says) the first time,
        else (False, why not, for the clicker alone)."""
        if not self.handoffs.is_staff_member(user, roles):
            return False, NOT_STAFF_SNIPPET
        snippet = await self.store.snippet(snippet_id)
        if snippet is None:
            return False, SNIPPET_GONE
        answer = text.strip() if action == "edit" else snippet.answer
        if not answer:
            return False, SNIPPET_GONE
        who = name or user
        state = STATES[action]
        if not await self.store.decide_snippet(snippet_id, state, who, answer):
            current = await self.store.snippet(snippet_id)
            by = current.decided_by if current is not None else ""
            return False, SNIPPET_DECIDED.format(state=current.state if current else "", who=by)
        if state != "rejected":
            await self.sync()
        return True, SNIPPET_DECIDED.format(state=state, who=who)

    async def sync(self) -> None:
        """This replica's index in step with the snippets approved anywhere."""
        if self.knowledge is None:
            return
        try:
            items = learned_items(await self.store.snippets())
            # Every 30 s on every replica: the index is asked only when the approved set moved.
            if items == self._synced:
                return
            report = await self.knowledge.learn(items)
        except Exception:  # a store or index fault: the next sync tries again
            log.exception("cannot bring the learned snippets into the index")
            return
        self._synced = items
        if report.changed:
            log.info("learned from staff: %s", report)

    def start(self) -> None:
        if self.knowledge is not None and self._syncing is None:
            self._syncing = asyncio.create_task(self._keep_syncing(), name="learned-sync")

    async def close(self) -> None:
        if self._syncing is not None:
            self._syncing.cancel()
            await asyncio.gather(self._syncing, return_exceptions=True)
            self._syncing = None

    async def _keep_syncing(self) -> None:
        while True:
            await self.sync()
            await asyncio.sleep(SYNC_SECONDS)

    async def count_cited(self, sources: Sequence[Source]) -> None:
        """One more citation for each learned snippet among an answer's ``sources``."""
        for source in sources:
            if source.path.startswith(PREFIX):
                try:
                    await self.store.cite_snippet(source.path.removeprefix(PREFIX))
                except StoreError:
                    log.exception("cannot count a citation of %s", source.path)
