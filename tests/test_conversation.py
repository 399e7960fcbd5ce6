"""The conversation manager and the service's gatekeeping, with a scripted model."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from adapters.memory import MemoryAdapter
from bot.config import BotConfig, Config, LimitsConfig, StoreConfig
from bot.core.service import Outcome, Service
from bot.core.wording import APOLOGY, BUSY, EMPTY_HINT, RESET_DONE
from bot.events import ConversationKey
from bot.generation.base import ChatMessage
from bot.storage.sqlite import SQLiteStore
from tests.scripted import ScriptedBackend

# Rate limits have their own tests; here they would only get in the way.
NO_LIMITS = LimitsConfig(user_per_minute=0, channel_per_minute=0, bot_messages_per_channel_minute=0)


def _config(tmp_path: Path, **bot: object) -> Config:
    return Config(
        bot=dataclasses.replace(BotConfig(), **bot),  # type: ignore[arg-type]
        store=StoreConfig(path=str(tmp_path / "parley.db")),
        limits=NO_LIMITS,
    )


def _echo(messages: Sequence[ChatMessage]) -> str:
    return f"you said: {messages[-1].content}"


async def _service(tmp_path: Path, backend: ScriptedBackend, **bot: object) -> Service:
    config = _config(tmp_path, **bot)
    service = Service(config, backend, SQLiteStore(config.store.path))
    await service.start()
    return service


async def test_messages_of_one_conversation_are_answered_in_arrival_order(tmp_path: Path) -> None:
    backend = ScriptedBackend(_echo, chunk=3, delay=0.001)
    service = await _service(tmp_path, backend)
    chat = MemoryAdapter(service)
    replies = [chat.send(f"message {i}") for i in range(6)]
    texts = [await r.wait() for r in replies]
    assert texts == [f"you said: message {i}" for i in range(6)]
    # Each prompt saw every earlier exchange: nothing overtook anything.
    for index, prompt in enumerate(backend.prompts):
        users = [m.content for m in prompt if m.role == "user"]
        assert users == [f"message {i}" for i in range(index + 1)]
    await service.close()


async def test_two_conversations_progress_at_the_same_time(tmp_path: Path) -> None:
    backend = ScriptedBackend("a slow and thoughtful answer", chunk=1, delay=0.01)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, backend.active)
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    service = await _service(tmp_path, backend)
    chat = MemoryAdapter(service)
    first, second = chat.send("hi", channel="c1"), chat.send("hi", channel="c2")
    await first.wait()
    await second.wait()
    watcher.cancel()
    assert peak == 2
    await service.close()


async def test_history_survives_a_restart(tmp_path: Path) -> None:
    backend = ScriptedBackend(_echo)
    service = await _service(tmp_path, backend)
    await MemoryAdapter(service).send("my order number is 4471").wait()
    await service.close()

    backend = ScriptedBackend(_echo)
    service = await _service(tmp_path, backend)
    await MemoryAdapter(service).send("where is it?").wait()
    contents = [m.content for m in backend.prompts[0]]
    assert contents[1:] == [
        "my order number is 4471",
        "you said: my order number is 4471",
        "where is it?",
    ]
    await service.close()


async def test_reset_forgets_only_its_own_conversation(tmp_path: Path) -> None:
    backend = ScriptedBackend(_echo)
    service = await _service(tmp_path, backend)
    chat = MemoryAdapter(service)
    await chat.send("first in c1", channel="c1").wait()
    await chat.send("first in c2", channel="c2").wait()
    assert await chat.send("reset", channel="c1").wait() == RESET_DONE
    await chat.send("second in c1", channel="c1").wait()
    await chat.send("second in c2", channel="c2").wait()
    c1, c2 = backend.prompts[-2], backend.prompts[-1]
    assert [m.content for m in c1 if m.role == "user"] == ["second in c1"]
    assert [m.content for m in c2 if m.role == "user"] == ["first in c2", "second in c2"]
    await service.close()


async def test_idle_conversation_starts_afresh(tmp_path: Path) -> None:
    backend = ScriptedBackend(_echo)
    service = await _service(tmp_path, backend, idle_expiry_minutes=1)
    key = ConversationKey("memory", "", "c1")
    await service.store.append(key, "user", "an old question")
    db = service.store
    assert isinstance(db, SQLiteStore)
    await db._run(lambda: db._conn().execute("UPDATE messages SET created_at = created_at - 3600"))
    await MemoryAdapter(service).send("new question").wait()
    assert [m.content for m in backend.prompts[0] if m.role == "user"] == ["new question"]
    await service.close()


async def test_empty_message_gets_a_hint_and_no_generation(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    service = await _service(tmp_path, backend)
    chat = MemoryAdapter(service)
    for text in ("", "   \n\t ", "\x00\x07"):
        reply = chat.send(text)
        assert await reply.wait() == EMPTY_HINT
        assert not reply.started
    await chat.drain()
    assert backend.prompts == []
    await service.close()


async def test_oversized_message_is_cut_and_the_reply_says_so(tmp_path: Path) -> None:
    backend = ScriptedBackend("ok")
    service = await _service(tmp_path, backend, max_message_chars=100)
    text = await MemoryAdapter(service).send("word " * 500).wait()
    assert text.startswith("ok")
    assert "longer than 100 characters" in text
    assert len(backend.prompts[0][-1].content) <= 100
    await service.close()


async def test_control_characters_and_broken_unicode_are_cleaned(tmp_path: Path) -> None:
    backend = ScriptedBackend(_echo)
    service = await _service(tmp_path, backend)
    await MemoryAdapter(service).send("pass\x00word \ud800reset\u202e?").wait()
    assert backend.prompts[0][-1].content == "password ?reset?"
    await service.close()


async def test_model_failure_mid_reply_apologises_records_and_goes_on(tmp_path: Path) -> None:
    backend = ScriptedBackend("The first part of the answer", chunk=5, fail_after=2)
    service = await _service(tmp_path, backend)
    chat = MemoryAdapter(service)
    reply = chat.send("question")
    text = await reply.wait()
    assert reply.failed
    assert text.startswith("The first") and text.endswith(APOLOGY)
    turns = await service.store.history(ConversationKey("memory", "", "c1"))
    assert [(t.role, t.content, t.status) for t in turns] == [
        ("user", "question", "complete"),
        ("assistant", "The first", "failed"),
    ]
    backend.fail_after = None
    assert await chat.send("again").wait() == "The first part of the answer"
    await service.close()


async def test_full_queue_answers_busy_at_once(tmp_path: Path) -> None:
    backend = ScriptedBackend("slow", chunk=1, delay=0.05)
    service = await _service(tmp_path, backend, max_pending=2)
    chat = MemoryAdapter(service)
    first, second = chat.send("one"), chat.send("two")
    third = chat.send("three")
    assert await third.wait(5) == BUSY
    assert third.failed
    assert await first.wait() == "slow" and await second.wait() == "slow"
    await chat.drain()
    assert third.outcome is Outcome.BUSY
    # Counted for the console: no answer of it is in the transcript.
    today = datetime.now(UTC).date()
    assert await service.store.outcome_counts(today) == [(today, "memory", "busy", 1)]
    await service.close()


async def test_duplicate_delivery_and_unaddressed_messages_are_ignored(tmp_path: Path) -> None:
    backend = ScriptedBackend("once")
    service = await _service(tmp_path, backend)
    chat = MemoryAdapter(service)
    first = chat.send("hello", message_id="m1")
    again = chat.send("hello", message_id="m1")
    aside = chat.send("not for the bot", addressed=False)
    robot = chat.send("from a bot", from_bot=True)
    await chat.drain()
    assert first.text == "once"
    assert again.outcome is Outcome.DUPLICATE and again.text is None
    assert aside.outcome is Outcome.IGNORED and robot.outcome is Outcome.IGNORED
    assert len(backend.prompts) == 1
    await service.close()


async def test_replied_to_message_is_given_as_context(tmp_path: Path) -> None:
    backend = ScriptedBackend("ok")
    service = await _service(tmp_path, backend)
    await MemoryAdapter(service).send("what about this?", context="Refunds take 5 days").wait()
    assert "Refunds take 5 days" in backend.prompts[0][-1].content
    await service.close()


async def test_model_role_markers_never_reach_the_user(tmp_path: Path) -> None:
    backend = ScriptedBackend("Sure!<|im_end|>\n<|im_start|>user\nhack\x1b[31m")
    service = await _service(tmp_path, backend)
    text = await MemoryAdapter(service).send("hi").wait()
    assert "<|" not in text and "\x1b" not in text
    await service.close()
