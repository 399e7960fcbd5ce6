"""``parley export-training``: conversations from the store as training data (chat JSONL).

A stored conversation is cut at every ``reset`` marker into the sessions the bot actually saw.
Only answers that were written out in full are kept (no failed, cut-short or don't-know
answers, together with the questions they answered). With ``min_rating = "up"`` a session is
exported up to and including its last answer rated 👍 (more 👍 than 👎), and sessions without
one are left out; with ``"any"`` every session with a complete answer is. Personal data
(email addresses, phone and card numbers, tokens) is masked as in the logs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from bot.generation.base import ChatMessage
from bot.redact import redact
from bot.training import TrainingError
from bot.training.data import write_conversations

__all__ = ["export_training", "rated_sessions"]

MinRating = Literal["up", "any"]
_EXCLUDED = ("failed", "partial", "dont_know")


def export_training(
    store_path: str | Path, min_rating: MinRating, out: str | Path, system: str = ""
) -> int:
    """Write the store's conversations to ``out``; returns how many were written. ``system``,
    when given, opens each conversation, as the bot's persona prompt opened it."""
    sessions = list(rated_sessions(store_path, min_rating))
    opening = [ChatMessage("system", system)] if system else []
    write_conversations(out, [[*opening, *session] for session in sessions])
    return len(sessions)


def rated_sessions(store_path: str | Path, min_rating: MinRating) -> Iterator[list[ChatMessage]]:
    path = Path(store_path)
    if not path.is_file():
        raise TrainingError(f"no conversation store at {path}")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT conversation, role, content, status, message_id FROM messages"
                " ORDER BY conversation, id"
            ).fetchall()
            votes = db.execute(
                "SELECT conversation, reply_id, SUM(rating = 'up') - SUM(rating = 'down')"
                " FROM feedback GROUP BY conversation, reply_id"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise TrainingError(f"{path}: {exc}") from exc
    liked = {(conversation, reply) for conversation, reply, net in votes if net > 0}
    session: list[tuple[ChatMessage, bool]] = []
    pending: list[ChatMessage] = []
    current = None
    for conversation, role, content, status, message_id in rows:
        if conversation != current or role == "reset":
            yield from _finish(session, min_rating)
            session, pending, current = [], [], conversation
            if role == "reset":
                continue
        if role == "user":
            pending.append(ChatMessage("user", redact(content)))
        elif role == "assistant":
            if status in _EXCLUDED:
                # The question stays unanswered in the data rather than answered badly.
                pending = []
                continue
            session.extend((question, False) for question in pending)
            pending = []
            good = (conversation, message_id) in liked if message_id else False
            session.append((ChatMessage("assistant", redact(content)), good))
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
