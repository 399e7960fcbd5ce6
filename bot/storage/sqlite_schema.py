"""The SQLite store's tables (the one place that knows them), and how a stored draft's row
becomes a ``Draft``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.events import Event
from bot.storage.base import Draft, Snippet

__all__ = [
    "ADDED_COLUMNS",
    "DRAFT_COLUMNS",
    "SCHEMA",
    "SNIPPET_COLUMNS",
    "draft_from_row",
    "snippet_from_row",
]

#: Columns added to a table after a release: a database made before gets them on opening.
ADDED_COLUMNS = {
    "handoffs": {"claimed_by": "TEXT", "claimed_at": "REAL"},
    "messages": {"first_text_s": "REAL", "answer_s": "REAL"},
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation TEXT NOT NULL,
    role TEXT NOT NULL,  -- user, assistant, or 'reset' (a marker: history starts after it)
    content TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'complete',
    user_id TEXT NOT NULL DEFAULT '',
    message_id TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    -- An answer's seconds to its first text shown and to the whole answer.
    first_text_s REAL,
    answer_s REAL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation, id);
CREATE TABLE IF NOT EXISTS health (id INTEGER PRIMARY KEY, checked_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS messages_by_reply ON messages (message_id) WHERE role = 'assistant';
-- Conversations handed to a human; ended_at is NULL while the bot stays quiet there.
CREATE TABLE IF NOT EXISTS handoffs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation TEXT NOT NULL,
    reason TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    claimed_by TEXT,
    claimed_at REAL
);
-- Deliveries already taken, so a platform's retry or redelivery is never answered twice.
CREATE TABLE IF NOT EXISTS seen (marker TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS handoffs_open ON handoffs (conversation) WHERE ended_at IS NULL;
-- Every addressed event, from when it is taken in until it is answered: what a restart after a
-- crash answers. reply_id: the message posted for its answer so far, which a restart edits.
CREATE TABLE IF NOT EXISTS inbox (
    marker TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'received',
    reply_id TEXT NOT NULL DEFAULT '',
    received_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_waiting ON inbox (received_at) WHERE state != 'answered';
-- Answers written for the team instead of posted (policy autonomy), with their question.
CREATE TABLE IF NOT EXISTS drafts (
    id TEXT PRIMARY KEY,
    conversation TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    event TEXT NOT NULL DEFAULT '',
    decided_by TEXT NOT NULL DEFAULT '',
    decided_at REAL,
    posted TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS drafts_pending ON drafts (created_at) WHERE state = 'pending';
-- What staff answered in resolved conversations, proposed for the knowledge base.
CREATE TABLE IF NOT EXISTS snippets (
    id TEXT PRIMARY KEY,
    conversation TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    link TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    decided_by TEXT NOT NULL DEFAULT '',
    decided_at REAL,
    cited INTEGER NOT NULL DEFAULT 0
);
-- Events that leave no answer in a transcript (busy, rate-limited), counted a day.
CREATE TABLE IF NOT EXISTS outcomes (
    day TEXT NOT NULL,
    platform TEXT NOT NULL,
    outcome TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (day, platform, outcome)
);
-- A rating of one bot answer, with what was asked and answered at the time.
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation TEXT NOT NULL,
    reply_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    rating TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (conversation, reply_id, user_id)
);
"""


DRAFT_COLUMNS = (
    "id, conversation, question, answer, state, created_at, event, decided_by, decided_at, posted"
)


def draft_from_row(row: tuple[Any, ...]) -> Draft:
    ident, conversation, question, answer, state, created, event, by, decided, posted = row
    return Draft(
        ident,
        conversation,
        question,
        answer,
        state,
        datetime.fromtimestamp(created, UTC),
        Event.from_json(event) if event else None,
        by,
        datetime.fromtimestamp(decided, UTC) if decided is not None else None,
        posted,
    )


SNIPPET_COLUMNS = (
    "id, conversation, question, answer, state, created_at, link, note, decided_by, decided_at,"
    " cited"
)


def snippet_from_row(row: tuple[Any, ...]) -> Snippet:
    ident, conversation, question, answer, state, created, link, note, by, decided, cited = row
    return Snippet(
        ident,
        conversation,
        question,
        answer,
        state,
        datetime.fromtimestamp(created, UTC),
        link,
        note,
        by,
        datetime.fromtimestamp(decided, UTC) if decided is not None else None,
        int(cited),
    )
