"""``parley export-training``: conversations from the store as training data (chat JSONL).

A stored conversation is cut at every ``reset`` marker into the sessions the bot actually saw.
Only answers that were written out in full are kept (no failed, cut-short or don't-know
answers, together with the questions they answered). With ``min_rating = "up"`` a session is
exported up to and including its last answer rated 👍 (more 👍 than 👎), and sessions without
one are left out; with ``"any"`` every session with a complete answer is. Personal data
(email addresses, phone and card numbers, tokens) is masked as in the logs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from bot.generation.base import ChatMessage
from bot.redact import redact
from bot.storage.base import Rated, Store, Transcript
from bot.training.data import write_conversations

__all__ = ["export_training", "rated_sessions"]

MinRating = Literal["up", "any"]
_EXCLUDED = ("failed", "partial", "dont_know")


async def export_training(
    store: Store, min_rating: MinRating, out: str | Path, system: str = ""
) -> int:
    """Write ``store``'s conversations to ``out``; returns how many were written. ``system``,
    when given, opens each conversation, as the bot's persona prompt opened it."""
    transcripts, ratings = await store.transcripts(), await store.ratings()
    sessions = list(rated_sessions(transcripts, ratings, min_rating))
    opening = [ChatMessage("system", system)] if system else []
    write_conversations(out, [[*opening, *session] for session in sessions])
    return len(sessions)


def rated_sessions(
    transcripts: Iterable[Transcript], ratings: Iterable[Rated], min_rating: MinRating
) -> Iterator[list[ChatMessage]]:
    """The sessions worth training on, each cut at its resets (see the module's notes)."""
    net: Counter[tuple[str, str]] = Counter()
    for rated in ratings:
        net[(rated.conversation, rated.reply_id)] += 1 if rated.rating == "up" else -1
    liked = {answer for answer, votes in net.items() if votes > 0}
    for transcript in transcripts:
        session: list[tuple[ChatMessage, bool]] = []
        pending: list[ChatMessage] = []
        for turn in transcript.turns:
            if turn.role == "reset":
                yield from _finish(session, min_rating)
                session, pending = [], []
            elif turn.role == "user":
                pending.append(ChatMessage("user", redact(turn.content)))
            elif turn.status in _EXCLUDED:
                # The question stays unanswered in the data rather than answered badly.
                pending = []
            else:
                session.extend((question, False) for question in pending)
                pending = []
                good = (transcript.conversation, turn.message_id) in liked and bool(turn.message_id)
                session.append((ChatMessage("assistant", redact(turn.content)), good))
        yield from _finish(session, min_rating)


def _finish(
    session: list[tuple[ChatMessage, bool]], min_rating: MinRating
) -> Iterator[list[ChatMessage]]:
    if min_rating == "any":
        end = len(session)
    else:
        end = max((i + 1 for i, (_, good) in enumerate(session) if good), default=0)
    messages = [message for message, _ in session[:end]]
    if any(m.role == "assistant" for m in messages):
        yield messages
