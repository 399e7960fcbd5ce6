"""The SQLite store's records of what happened: handoffs and their claims, drafts for staff,
and transcripts and ratings read back whole for ``parley report`` and ``parley export-training``.
``SQLiteStore`` (``sqlite.py``) keeps the connection and everything else."""

from __future__ import annotations

import sqlite3
import time
from abc import abstractmethod
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import TypeVar

from bot.events import ConversationKey
from bot.storage.base import (
    Claim,
    Draft,
    DraftState,
    Rated,
    Recorded,
    Snippet,
    SnippetState,
    Store,
    Timing,
    Transcript,
)
from bot.storage.sqlite_schema import (
    DRAFT_COLUMNS,
    SNIPPET_COLUMNS,
    draft_from_row,
    snippet_from_row,
)

__all__ = ["SQLiteRecords"]

T = TypeVar("T")


def _at(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class SQLiteRecords(Store):
    @abstractmethod
    async def _run(self, fn: Callable[[], T]) -> T: ...

    @abstractmethod
    def _conn(self) -> sqlite3.Connection: ...

    async def transcripts(self) -> list[Transcript]:
        def query() -> list[Transcript]:
            rows = (
                self._conn()
                .execute(
                    "SELECT conversation, role, content, status, message_id, created_at,"
                    " first_text_s, answer_s FROM messages ORDER BY conversation, id"
                )
                .fetchall()
            )
            found: dict[str, list[Recorded]] = {}
            for conversation, role, content, status, message_id, ts, first, whole in rows:
                when = datetime.fromtimestamp(ts, UTC)
                timing = Timing(first, whole) if whole is not None else None
                turn = Recorded(role, content, when, status, message_id, timing)
                found.setdefault(conversation, []).append(turn)
            return [Transcript(name, tuple(turns)) for name, turns in found.items()]

        return await self._run(query)

    async def ratings(self) -> list[Rated]:
        rows = await self._run(
            lambda: (
                self._conn()
                .execute(
                    "SELECT conversation, reply_id, rating, question, created_at FROM feedback"
                    " ORDER BY id"
                )
                .fetchall()
            )
        )
        return [
            Rated(conversation, reply, rating, question, datetime.fromtimestamp(ts, UTC))
            for conversation, reply, rating, question, ts in rows
        ]

    async def count_outcome(self, platform: str, outcome: str) -> None:
        row = (datetime.now(UTC).date().isoformat(), platform, outcome)
        await self._run(
            lambda: self._conn().execute(
                "INSERT INTO outcomes (day, platform, outcome, count) VALUES (?, ?, ?, 1)"
                " ON CONFLICT (day, platform, outcome) DO UPDATE SET count = count + 1",
                row,
            )
        )

    async def outcome_counts(self, since: date) -> list[tuple[date, str, str, int]]:
        rows = await self._run(
            lambda: (
                self._conn()
                .execute(
                    "SELECT day, platform, outcome, count FROM outcomes WHERE day >= ?"
                    " ORDER BY day",
                    (since.isoformat(),),
                )
                .fetchall()
            )
        )
        return [(date.fromisoformat(d), p, o, int(n)) for d, p, o, n in rows]

    async def handoffs_started(self) -> list[datetime]:
        rows = await self._run(
            lambda: self._conn().execute("SELECT started_at FROM handoffs ORDER BY id").fetchall()
        )
        return [datetime.fromtimestamp(ts, UTC) for (ts,) in rows]

    async def add_draft(self, draft: Draft) -> None:
        row = (
            draft.id,
            draft.conversation,
            draft.question,
            draft.answer,
            draft.state,
            draft.created_at.timestamp(),
            draft.event.to_json() if draft.event is not None else "",
        )
        await self._run(
            lambda: self._conn().execute(
                "INSERT INTO drafts (id, conversation, question, answer, state, created_at,"
                " event) VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        )

    async def drafts(self) -> list[Draft]:
        rows = await self._run(
            lambda: (
                self._conn()
                .execute(f"SELECT {DRAFT_COLUMNS} FROM drafts ORDER BY created_at, id")
                .fetchall()
            )
        )
        return [draft_from_row(row) for row in rows]

    async def pending_drafts(self) -> list[Draft]:
        rows = await self._run(
            lambda: (
                self._conn()
                .execute(
                    f"SELECT {DRAFT_COLUMNS} FROM drafts WHERE state = 'pending'"
                    " ORDER BY created_at, id"
                )
                .fetchall()
            )
        )
        return [draft_from_row(row) for row in rows]

    async def draft(self, draft_id: str) -> Draft | None:
        row = await self._run(
            lambda: (
                self._conn()
                .execute(f"SELECT {DRAFT_COLUMNS} FROM drafts WHERE id = ?", (draft_id,))
                .fetchone()
            )
        )
        return draft_from_row(row) if row is not None else None

    async def decide_draft(
        self, draft_id: str, state: DraftState, by: str, posted: str = ""
    ) -> bool:
        row = (state, by, time.time(), posted, draft_id)
        cursor = await self._run(
            lambda: self._conn().execute(
                "UPDATE drafts SET state = ?, decided_by = ?, decided_at = ?, posted = ?"
                " WHERE id = ? AND state = 'pending'",
                row,
            )
        )
        return cursor.rowcount == 1

    async def add_snippet(self, snippet: Snippet) -> None:
        row = (
            snippet.id,
            snippet.conversation,
            snippet.question,
            snippet.answer,
            snippet.state,
            snippet.created_at.timestamp(),
            snippet.link,
            snippet.note,
        )
        await self._run(
            lambda: self._conn().execute(
                "INSERT INTO snippets (id, conversation, question, answer, state, created_at,"
                " link, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        )

    async def snippets(self) -> list[Snippet]:
        query = f"SELECT {SNIPPET_COLUMNS} FROM snippets ORDER BY created_at, id"
        rows = await self._run(lambda: self._conn().execute(query).fetchall())
        return [snippet_from_row(row) for row in rows]

    async def snippet(self, snippet_id: str) -> Snippet | None:
        query = f"SELECT {SNIPPET_COLUMNS} FROM snippets WHERE id = ?"
        row = await self._run(lambda: self._conn().execute(query, (snippet_id,)).fetchone())
        return snippet_from_row(row) if row is not None else None

    async def decide_snippet(
        self, snippet_id: str, state: SnippetState, by: str, answer: str
    ) -> bool:
        row = (state, by, time.time(), answer, snippet_id)
        cursor = await self._run(
            lambda: self._conn().execute(
                "UPDATE snippets SET state = ?, decided_by = ?, decided_at = ?, answer = ?"
                " WHERE id = ? AND state = 'pending'",
                row,
            )
        )
        return cursor.rowcount == 1

    async def cite_snippet(self, snippet_id: str) -> None:
        await self._run(
            lambda: self._conn().execute(
                "UPDATE snippets SET cited = cited + 1 WHERE id = ?", (snippet_id,)
            )
        )

    async def start_handoff(self, key: ConversationKey, reason: str) -> None:
        row = (str(key), reason, time.time())
        await self._run(
            lambda: self._conn().execute(
                "INSERT INTO handoffs (conversation, reason, started_at) VALUES (?, ?, ?)", row
            )
        )

    async def claim_handoff(self, key: ConversationKey, by: str) -> tuple[bool, str]:
        def write() -> tuple[bool, str]:
            db = self._conn()
            taken = db.execute(
                "UPDATE handoffs SET claimed_by = ?, claimed_at = ? WHERE conversation = ?"
                " AND ended_at IS NULL AND claimed_by IS NULL",
                (by, time.time(), str(key)),
            )
            if taken.rowcount:
                return True, by
            row = db.execute(
                "SELECT claimed_by FROM handoffs WHERE conversation = ? AND ended_at IS NULL"
                " ORDER BY id DESC LIMIT 1",
                (str(key),),
            ).fetchone()
            return False, (row[0] or "") if row else ""

        return await self._run(write)

    async def claims(self) -> list[Claim]:
        rows = await self._run(
            lambda: (
                self._conn()
                .execute(
                    "SELECT conversation, started_at, claimed_by, claimed_at FROM handoffs"
                    " WHERE claimed_by IS NOT NULL ORDER BY id"
                )
                .fetchall()
            )
        )
        return [
            Claim(conversation, _at(started), by, _at(claimed))
            for conversation, started, by, claimed in rows
        ]

    async def handoff_since(self, key: ConversationKey) -> datetime | None:
        def query() -> datetime | None:
            row = (
                self._conn()
                .execute(
                    "SELECT MAX(started_at) FROM handoffs"
                    " WHERE conversation = ? AND ended_at IS NULL",
                    (str(key),),
                )
                .fetchone()
            )
            return datetime.fromtimestamp(row[0], UTC) if row and row[0] is not None else None

        return await self._run(query)

    async def end_handoff(self, key: ConversationKey) -> None:
        row = (time.time(), str(key))
        await self._run(
            lambda: self._conn().execute(
                "UPDATE handoffs SET ended_at = ? WHERE conversation = ? AND ended_at IS NULL", row
            )
        )
