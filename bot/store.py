"""Persistent conversation history; SQLite (stdlib ``sqlite3``, WAL) by default.

Every call runs on one dedicated thread, so the event loop never waits on the disk and the
connection is only ever touched by the thread that opened it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

from bot.errors import StoreError
from bot.events import ConversationKey

__all__ = ["SQLiteStore", "Store", "Turn"]

Role = Literal["user", "assistant"]
Status = Literal["complete", "partial", "failed"]
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation TEXT NOT NULL,
    role TEXT NOT NULL,  -- user, assistant, or 'reset' (a marker: history starts after it)
    content TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'complete',
    user_id TEXT NOT NULL DEFAULT '',
    message_id TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation, id);
CREATE TABLE IF NOT EXISTS health (id INTEGER PRIMARY KEY, checked_at REAL NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Turn:
    role: Role
    content: str
    created_at: datetime
    status: Status = "complete"


class Store(ABC):
    """What the conversation manager needs from storage; SQLite here, Redis for scale-out."""

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


class SQLiteStore(Store):
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

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
        db.executescript(_SCHEMA)
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
    ) -> None:
        row = (str(key), role, content, status, user, message_id, time.time())
        await self._run(
            lambda: self._conn().execute(
                "INSERT INTO messages (conversation, role, content, status, user_id, message_id,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
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

    async def reset(self, key: ConversationKey) -> None:
        row = (str(key), time.time())
        await self._run(
            lambda: self._conn().execute(
                "INSERT INTO messages (conversation, role, content, created_at)"
                " VALUES (?, 'reset', '', ?)",
                row,
            )
        )
