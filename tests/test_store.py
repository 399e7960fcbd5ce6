"""SQLite history: ordered, reset-aware, and still there after the process reopens it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.events import ConversationKey
from bot.storage.sqlite import SQLiteStore

KEY = ConversationKey("console", "", "terminal")
OTHER = ConversationKey("discord", "g1", "c1", "t1")


async def test_history_is_per_conversation_and_in_order(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db" / "parley.db")
    await store.open()
    for index in range(5):
        await store.append(KEY, "user", f"question {index}")
        await store.append(KEY, "assistant", f"answer {index}")
    await store.append(OTHER, "user", "elsewhere")
    history = await store.history(KEY, limit=4)
    assert [t.content for t in history] == ["question 3", "answer 3", "question 4", "answer 4"]
    assert [t.content for t in await store.history(OTHER)] == ["elsewhere"]
    await store.close()


async def test_reset_starts_afresh_but_keeps_other_conversations(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "parley.db")
    await store.open()
    await store.append(KEY, "user", "old")
    await store.append(OTHER, "user", "kept")
    await store.reset(KEY)
    assert await store.history(KEY) == []
    await store.append(KEY, "user", "new")
    assert [t.content for t in await store.history(KEY)] == ["new"]
    assert [t.content for t in await store.history(OTHER)] == ["kept"]
    await store.close()


async def test_history_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "parley.db"
    store = SQLiteStore(path)
    await store.open()
    await store.append(KEY, "user", "remember me")
    await store.append(KEY, "assistant", "partly", status="partial")
    await store.close()
    again = SQLiteStore(path)
    await again.open()
    turns = await again.history(KEY)
    assert [(t.role, t.content, t.status) for t in turns] == [
        ("user", "remember me", "complete"),
        ("assistant", "partly", "partial"),
    ]
    assert turns[0].created_at.tzinfo is not None
    await again.close()


async def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "parley.db")
    with pytest.raises(RuntimeError, match="not open"):
        await store.history(KEY)


async def test_a_claimed_delivery_stays_claimed_across_a_restart(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "parley.db")
    await store.open()
    assert await store.claim("slack/T1/C1/Ev1", ttl=60)
    assert not await store.claim("slack/T1/C1/Ev1", ttl=60)
    assert await store.claim("slack/T1/C1/Ev2", ttl=60)
    assert await store.claim("short", ttl=-1)
    assert await store.claim("short", ttl=60)  # the first claim had already expired
    await store.close()
    again = SQLiteStore(tmp_path / "parley.db")
    await again.open()
    assert not await again.claim("slack/T1/C1/Ev1", ttl=60)
    await again.close()


async def test_a_database_from_before_claims_gets_their_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the handoffs table as an earlier release made it
        db.execute(
            "CREATE TABLE handoffs (id INTEGER PRIMARY KEY AUTOINCREMENT, conversation TEXT"
            " NOT NULL, reason TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL)"
        )
        db.execute(
            "INSERT INTO handoffs (conversation, reason, started_at) VALUES ('web//t/', 'asked', 1)"
        )
    store = SQLiteStore(path)
    await store.open()
    try:
        key = ConversationKey("web", "", "t")
        assert await store.claim_handoff(key, "Sam") == (True, "Sam")
        assert await store.claim_handoff(key, "Kim") == (False, "Sam")
        (claim,) = await store.claims()
        assert claim.claimed_by == "Sam" and claim.conversation == str(key)
    finally:
        await store.close()
