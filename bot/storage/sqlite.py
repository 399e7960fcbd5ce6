"""The default store: SQLite (stdlib ``sqlite3``, WAL), one file.

Every call runs on one dedicated thread, so the event loop never waits on the disk and the
connection is only ever touched by the thread that opened it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from bot.errors import StoreError
from bot.events import ConversationKey, Event
from bot.storage.base import (
    INBOX_KEEP,
    InboxState,
    Rating,
    Role,
    Status,
    Timing,
    Turn,
    Waiting,
)
from bot.storage.sqlite_records import SQLiteRecords
from bot.storage.sqlite_schema import ADDED_COLUMNS, SCHEMA

__all__ = ["SQLiteStore"]

T = TypeVar("T")


class SQLiteStore(SQLiteRecords):
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._claims = 0

    async def open(self) -> None:
        if self._executor is not None:
            raise RuntimeError("store is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-store")
        await self._run(self._open)

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        for table, columns in ADDED_COLUMNS.items():
            have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns.items():
                if name not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        self._db = db

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._run(self._close)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError("store is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    async def check(self) -> None:
        now = time.time()
        await self._run(
            lambda: self._conn().execute(
                "INSERT OR REPLACE INTO health (id, checked_at) VALUES (1, ?)", (now,)
            )
        )

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

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
    ) -> None:
        seconds = (timing.first_text_s, timing.answer_s) if timing else (None, None)
        row = (str(key), role, content, status, user, message_id, time.time(), *seconds)
        await self._run(
            lambda: self._conn().execute(
                "INSERT INTO messages (conversation, role, content, status, user_id, message_id,"
                " created_at, first_text_s, answer_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        )

    async def history(self, key: ConversationKey, limit: int = 100) -> list[Turn]:
        def query() -> list[Turn]:
            rows = (
                self._conn()
                .execute(
                    "SELECT role, content, status, created_at FROM messages"
                    " WHERE conversation = ? AND id > COALESCE((SELECT MAX(id) FROM messages"
                    "   WHERE conversation = ? AND role = 'reset'), 0)"
                    " ORDER BY id DESC LIMIT ?",
                    (str(key), str(key), limit),
                )
                .fetchall()
            )
            return [
                Turn(role, content, datetime.fromtimestamp(ts, UTC), status)
                for role, content, status, ts in reversed(rows)
            ]

        return await self._run(query)

    async def claim(self, marker: str, ttl: float) -> bool:
        now = time.time()

        def write() -> bool:
            db = self._conn()
            if self._claims % 1000 == 0:
                db.execute("DELETE FROM seen WHERE expires_at < ?", (now,))
            self._claims += 1
            db.execute("DELETE FROM seen WHERE marker = ? AND expires_at < ?", (marker, now))
            cursor = db.execute(
                "INSERT OR IGNORE INTO seen (marker, expires_at) VALUES (?, ?)", (marker, now + ttl)
            )
            return cursor.rowcount == 1

        return await self._run(write)

    async def inbox_add(self, event: Event) -> None:
        now = time.time()
        row = (event.marker, event.to_json(), event.received_at.timestamp(), now)

        def write() -> None:
            db = self._conn()
            db.execute(
                "INSERT OR IGNORE INTO inbox (marker, event, received_at, updated_at)"
                " VALUES (?, ?, ?, ?)",
                row,
            )
            db.execute(
                "DELETE FROM inbox WHERE state = 'answered' AND updated_at < ?", (now - INBOX_KEEP,)
            )

        await self._run(write)

    async def inbox_mark(self, marker: str, state: InboxState, reply_id: str = "") -> None:
        row = (state, reply_id, time.time(), marker)
        await self._run(
            lambda: self._conn().execute(
                "UPDATE inbox SET state = ?, reply_id = COALESCE(NULLIF(?, ''), reply_id),"
                " updated_at = ? WHERE marker = ?",
                row,
            )
        )

    async def inbox_state(self, marker: str) -> InboxState | None:
        def query() -> InboxState | None:
            row = (
                self._conn()
                .execute("SELECT state FROM inbox WHERE marker = ?", (marker,))
                .fetchone()
            )
            return row[0] if row else None

        return await self._run(query)

    async def inbox_waiting(self, limit: int = 1000) -> list[Waiting]:
        def query() -> list[Waiting]:
            rows = self._conn().execute(
                "SELECT event, state, reply_id, received_at FROM inbox WHERE state != 'answered'"
                " ORDER BY received_at, marker LIMIT ?",
                (limit,),
            )
            return [
                Waiting(Event.from_json(event), state, reply_id, datetime.fromtimestamp(ts, UTC))
                for event, state, reply_id, ts in rows.fetchall()
            ]

        return await self._run(query)

    async def inbox_count(self) -> tuple[int, datetime | None]:
        def query() -> tuple[int, datetime | None]:
            count, oldest = (
                self._conn()
                .execute("SELECT COUNT(*), MIN(received_at) FROM inbox WHERE state != 'answered'")
                .fetchone()
            )
            return int(count), datetime.fromtimestamp(oldest, UTC) if oldest is not None else None

        return await self._run(query)

    async def extend(self, marker: str, ttl: float) -> None:
        row = (time.time() + ttl, marker)
        await self._run(
            lambda: self._conn().execute("UPDATE seen SET expires_at = ? WHERE marker = ?", row)
        )

    async def release(self, marker: str) -> None:
        await self._run(
            lambda: self._conn().execute("DELETE FROM seen WHERE marker = ?", (marker,))
        )

    async def count_questions(
        self, platform: str, workspace: str, user: str, since: datetime
    ) -> int:
        prefix = f"{platform}/{workspace}/"
        row = (user, since.timestamp(), len(prefix), prefix)

        def query() -> int:
            found = self._conn().execute(
                "SELECT COUNT(*) FROM messages WHERE role = 'user' AND user_id = ?"
                " AND created_at >= ? AND substr(conversation, 1, ?) = ?",
                row,
            )
            return int(found.fetchone()[0])

        return await self._run(query)

    async def add_feedback(
        self, scope: ConversationKey, reply_id: str, user: str, rating: Rating
    ) -> bool:
        channel = "/".join((scope.platform, scope.workspace, scope.channel, ""))

        def write() -> bool:
            db = self._conn()
            found = db.execute(
                "SELECT id, conversation, content FROM messages WHERE role = 'assistant'"
                " AND message_id = ? AND substr(conversation, 1, ?) = ? ORDER BY id DESC LIMIT 1",
                (reply_id, len(channel), channel),
            ).fetchone()
            if found is None:
                return False
            answer_id, conversation, answer = found
            question = db.execute(
                "SELECT content FROM messages WHERE conversation = ? AND role = 'user' AND id < ?"
                " ORDER BY id DESC LIMIT 1",
                (conversation, answer_id),
            ).fetchone()
            # One rating per person and answer: changing one's mind replaces it.
            db.execute(
                "INSERT INTO feedback (conversation, reply_id, user_id, rating, question, answer,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (conversation, reply_id,"
                " user_id) DO UPDATE SET rating = excluded.rating,"
                " created_at = excluded.created_at",
                (
                    conversation,
                    reply_id,
                    user,
                    rating,
                    question[0] if question else "",
                    answer,
                    time.time(),
                ),
            )
            return True

        return await self._run(write)

    async def reset(self, key: ConversationKey) -> None:
        row = (str(key), time.time())
        await self._run(
            lambda: self._conn().execute(
                "INSERT INTO messages (conversation, role, content, created_at)"
                " VALUES (?, 'reset', '', ?)",
                row,
            )
        )
