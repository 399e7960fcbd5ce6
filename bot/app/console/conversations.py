"""Finding and reading one conversation for the console: its turns, each answer's outcome and
ratings, personal data masked unless the admin turned masking off for their session."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from bot.app.console.overview import OUTCOMES
from bot.redact import redact
from bot.storage.base import Store

__all__ = ["Listed", "Shown", "find", "read"]

#: Conversations a search lists at most, the latest first.
LISTED = 200


@dataclass(frozen=True)
class Listed:
    conversation: str
    platform: str
    last: datetime
    questions: int
    first_question: str


@dataclass(frozen=True)
class Shown:
    role: str
    content: str
    created_at: datetime
    #: What became of an answer ("answered", "don't know", "failed"); "" for a question.
    outcome: str = ""
    thumbs_up: int = 0
    thumbs_down: int = 0


def _masker(masked: bool) -> Callable[[str], str]:
    return redact if masked else (lambda text: text)


async def find(store: Store, query: str, since: datetime, masked: bool = True) -> list[Listed]:
    """The conversations active since ``since`` with ``query`` (any case) in a turn, or in
    their name; the latest first."""
    mask = _masker(masked)
    needle = query.casefold().strip()
    found = []
    for transcript in await store.transcripts():
        turns = [t for t in transcript.turns if t.role != "reset"]
        if not turns or turns[-1].created_at < since:
            continue
        if needle and not (
            needle in transcript.conversation.casefold()
            or any(needle in t.content.casefold() for t in turns)
        ):
            continue
        questions = [t.content for t in turns if t.role == "user"]
        found.append(
            Listed(
                transcript.conversation,
                transcript.conversation.split("/", 1)[0],
                turns[-1].created_at,
                len(questions),
                mask(questions[0]) if questions else "",
            )
        )
    return sorted(found, key=lambda listed: listed.last, reverse=True)[:LISTED]


async def read(store: Store, conversation: str, masked: bool = True) -> list[Shown] | None:
    """Every turn of ``conversation``, oldest first; None when the store has no such one."""
    mask = _masker(masked)
    transcript = next(
        (t for t in await store.transcripts() if t.conversation == conversation), None
    )
    if transcript is None:
        return None
    ratings: dict[str, Counter[str]] = {}
    for rated in await store.ratings():
        if rated.conversation == conversation:
            ratings.setdefault(rated.reply_id, Counter())[rated.rating] += 1
    shown = []
    for turn in transcript.turns:
        if turn.role == "reset":
            shown.append(Shown("reset", "The conversation was reset here.", turn.created_at))
            continue
        votes = ratings.get(turn.message_id, Counter()) if turn.message_id else Counter()
        shown.append(
            Shown(
                turn.role,
                mask(turn.content),
                turn.created_at,
                OUTCOMES.get(turn.status, "failed") if turn.role == "assistant" else "",
                votes["up"],
                votes["down"],
            )
        )
    return shown
