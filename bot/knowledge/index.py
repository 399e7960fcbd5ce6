"""The passages and their embeddings, kept in SQLite beside the conversations.

Its own tables (``kb_*``) in the store's database file, through its own connection: the caller
owns the one thread that uses it (see :class:`bot.knowledge.base.KnowledgeBase`).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.knowledge.ingest import Document

__all__ = ["Passage", "PassageIndex", "Source", "SourceInfo"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kb_sources (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,          -- the file's absolute path: what re-ingesting replaces
    path TEXT NOT NULL,                -- the path a citation shows
    title TEXT NOT NULL,
    url TEXT NOT NULL DEFAULT '',
    collection TEXT NOT NULL DEFAULT 'default',
    digest TEXT NOT NULL,
    ingested_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kb_passages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_id INTEGER NOT NULL REFERENCES kb_sources (id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    heading TEXT NOT NULL,
    text TEXT NOT NULL,
    embedding BLOB NOT NULL            -- float32, unit length
);
CREATE INDEX IF NOT EXISTS kb_passages_by_source ON kb_passages (source_id, ordinal);
CREATE TABLE IF NOT EXISTS kb_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Source:
    """What an answer cites: a document's title, and its URL or path."""

    title: str
    path: str
    url: str = ""

    @property
    def link(self) -> str:
        return self.url or self.path


@dataclass(frozen=True, slots=True)
class Passage:
    id: int
    source: Source
    heading: str
    text: str
    collection: str = "default"

    @property
    def indexed_text(self) -> str:
        """What both retrievers read: the title and heading carry much of a section's meaning."""
        head = " — ".join(part for part in (self.source.title, self.heading) if part)
        return f"{head}\n{self.text}"


@dataclass(frozen=True, slots=True)
class SourceInfo:
    path: str
    title: str
    url: str
    collection: str
    passages: int
    ingested_at: float


class PassageIndex:
    """Blocking; every method must be called from the thread that called :meth:`open`."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        if self._db is not None:
            raise RuntimeError("the passage index is already open")
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(_SCHEMA)
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the passage index is not open")
        return self._db

    def meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM kb_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._conn().execute(
            "INSERT INTO kb_meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def digests(self) -> dict[str, str]:
        """The digest of each stored file, by key."""
        return dict(self._conn().execute("SELECT key, digest FROM kb_sources").fetchall())

    def replace(
        self, key: str, document: Document, collection: str, embeddings: np.ndarray
    ) -> None:
        """Store ``document``'s passages in place of whatever ``key`` had, in one transaction."""
        db = self._conn()
        with _transaction(db):
            db.execute("DELETE FROM kb_sources WHERE key = ?", (key,))
            cursor = db.execute(
                "INSERT INTO kb_sources (key, path, title, url, collection, digest, ingested_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    document.path,
                    document.title,
                    document.url,
                    collection,
                    document.digest,
                    time.time(),
                ),
            )
            source_id = cursor.lastrowid
            db.executemany(
                "INSERT INTO kb_passages (source_id, ordinal, heading, text, embedding)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (source_id, n, s.heading, s.text, np.asarray(v, np.float32).tobytes())
                    for n, (s, v) in enumerate(zip(document.sections, embeddings, strict=True))
                ],
            )

    def remove(self, keys: list[str]) -> None:
        db = self._conn()
        with _transaction(db):
            db.executemany("DELETE FROM kb_sources WHERE key = ?", [(k,) for k in keys])

    def clear(self) -> None:
        db = self._conn()
        with _transaction(db):
            db.execute("DELETE FROM kb_sources")

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM kb_passages").fetchone()[0])

    def sources(self) -> list[SourceInfo]:
        rows = (
            self._conn()
            .execute(
                "SELECT s.path, s.title, s.url, s.collection, COUNT(p.id), s.ingested_at"
                " FROM kb_sources s LEFT JOIN kb_passages p ON p.source_id = s.id"
                " GROUP BY s.id ORDER BY s.collection, s.path"
            )
            .fetchall()
        )
        return [SourceInfo(*row) for row in rows]

    def keys_under(self, folder: Path) -> list[str]:
        return self.keys_starting(str(folder).rstrip("/") + "/")

    def keys_starting(self, prefix: str) -> list[str]:
        rows = self._conn().execute("SELECT key FROM kb_sources").fetchall()
        return [key for (key,) in rows if key.startswith(prefix)]

    def load(self) -> tuple[list[Passage], np.ndarray]:
        """Every passage, and their embeddings as one (n, dimensions) float32 array."""
        rows = (
            self._conn()
            .execute(
                "SELECT p.id, s.title, s.path, s.url, p.heading, p.text, s.collection, p.embedding"
                " FROM kb_passages p JOIN kb_sources s ON s.id = p.source_id"
                " ORDER BY s.path, p.ordinal"
            )
            .fetchall()
        )
        passages = [
            Passage(pid, Source(title, path, url), heading, text, collection)
            for pid, title, path, url, heading, text, collection, _ in rows
        ]
        if not rows:
            return passages, np.zeros((0, 0), dtype=np.float32)
        vectors = np.stack([np.frombuffer(row[-1], dtype=np.float32) for row in rows])
        return passages, vectors


class _transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *rest: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
