"""The durable inbox: a question taken in is answered exactly once, even across a SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.memory import MemoryAdapter
from bot.config import Config, KnowledgeConfig, LimitsConfig, StoreConfig
from bot.core.service import Service
from bot.core.wording import TOO_LATE
from bot.events import Event
from bot.storage.sqlite import SQLiteStore
from tests.inbox_child import LEASE
from tests.scripted import ScriptedBackend

ROOT = Path(__file__).resolve().parents[1]
ANSWER = "Your parcel is on its way and arrives tomorrow."
LIMITS = LimitsConfig(user_per_minute=0, channel_per_minute=0, recover_per_minute=0)


def _service(db: Path, backend: ScriptedBackend, limits: LimitsConfig = LIMITS) -> Service:
    config = Config(
        store=StoreConfig(path=str(db)), knowledge=KnowledgeConfig(enabled=False), limits=limits
    )
    return Service(config, backend, SQLiteStore(db))


def kill_at(db: Path, stage: str, redis_url: str = "") -> None:
    """Run a service that takes a question in, and SIGKILL it at ``stage``."""
    with subprocess.Popen(
        [sys.executable, "-m", "tests.inbox_child", str(db), stage, redis_url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def _rows(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT role, content, status FROM messages WHERE role != 'reset' ORDER BY id"
        ).fetchall()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("stage", "reply_id"),
    [
        # Killed after the question was taken in, before any answer: a new message.
        ("taken", "resumed-m1"),
        # Killed while the answer streamed: the message already posted is finished.
        ("posted", "reply-m1"),
    ],
)
async def test_a_question_taken_in_before_a_kill_is_answered_once_after_the_restart(
    tmp_path: Path, stage: str, reply_id: str
) -> None:
    db = tmp_path / "parley.db"
    await asyncio.to_thread(kill_at, db, stage)
    # The killed process held the answer's lease: the others leave it be until it lapses.
    await asyncio.sleep(LEASE + 0.2)

    service = _service(db, ScriptedBackend(ANSWER))
    await service.start()
    chat = MemoryAdapter(service, durable=True)
    assert await service.store.inbox_count() != (0, None)
    assert await service.recover("memory") == 1
    [(event, reply)] = chat.resumed
    assert event.message_id == "m1" and event.text == "where is my parcel?"
    assert await reply.wait() == ANSWER
    assert reply.message_id == reply_id
    assert await service.recover("memory") == 0  # nothing left: answered once
    assert await service.store.inbox_count() == (0, None)
    await service.close()
    # One question, one complete answer in the conversation.
    assert _rows(db) == [
        ("user", "where is my parcel?", "complete"),
        ("assistant", ANSWER, "complete"),
    ]


async def test_a_question_too_old_when_the_service_comes_back_gets_an_apology(
    tmp_path: Path,
) -> None:
    db = tmp_path / "parley.db"
    backend = ScriptedBackend(ANSWER)
    service = _service(db, backend, LimitsConfig(recover_within_minutes=30))
    await service.start()
    chat = MemoryAdapter(service, durable=True)
    old = datetime.now(UTC) - timedelta(hours=2)
    await service.store.inbox_add(chat.event("hello?", message_id="old", received_at=old))
    await service.store.inbox_add(chat.event("still there?", message_id="new"))
    assert await service.recover("memory") == 2
    texts = {event.message_id: await reply.wait() for event, reply in chat.resumed}
    assert texts == {"old": TOO_LATE, "new": ANSWER}
    assert len(backend.prompts) == 1
    await service.close()


async def test_answered_events_leave_the_inbox_and_other_platforms_are_not_durable(
    tmp_path: Path,
) -> None:
    db = tmp_path / "parley.db"
    service = _service(db, ScriptedBackend(ANSWER))
    await service.start()
    durable, plain = MemoryAdapter(service, durable=True), MemoryAdapter(service, "web")
    assert await durable.send("where is my parcel?").wait() == ANSWER
    assert await plain.send("where is my parcel?").wait() == ANSWER
    assert await service.store.inbox_count() == (0, None)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT state, event FROM inbox").fetchall()[0][0] == "answered"
        assert conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0] == 1
    await service.close()


def test_an_event_survives_its_json() -> None:
    event = Event(
        platform="discord",
        channel="c",
        user="u",
        text="hi ✨",
        thread="t",
        message_id="m",
        roles=("r1",),
        parents=("p",),
        context="earlier",
    )
    assert Event.from_json(event.to_json()) == event
    assert event.marker == "discord//c/m" and Event("x", "c", "u", "t").marker == ""


async def test_doctor_reports_the_questions_waiting_in_the_inbox(tmp_path: Path) -> None:
    from bot.app.commands.doctor import run_checks

    db = tmp_path / "parley.db"
    config = Config(store=StoreConfig(path=str(db)))
    [store_line] = [str(c) for c in await run_checks(config) if c.what.startswith("store")]
    assert store_line.endswith("open and writable; inbox empty")
    store = SQLiteStore(db)
    await store.open()
    old = datetime.now(UTC) - timedelta(minutes=5)
    await store.inbox_add(Event("discord", "c", "u", "hi", message_id="m", received_at=old))
    await store.close()
    [store_line] = [str(c) for c in await run_checks(config) if c.what.startswith("store")]
    assert "inbox: 1 question(s) waiting, the oldest 30" in store_line
